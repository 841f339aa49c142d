"""Backend, device and precision: resolved once, said, and refused where they cannot hold (issue 15 item 16).

The table is pure (what the machine offers is passed in as a ``Hardware``), so every row is checked here,
GPU rows included; the node says the result at start-up and in /diagnostics (over real DDS below).
"""
from __future__ import annotations

import pytest

from da3_ros.engines import EngineConfigError, EngineSettings, Hardware, resolve_settings


class Machine(Hardware):
    """A machine described by what it offers (the real one answers by importing the libraries)."""

    def __init__(self, tensorrt=False, ort=("CPUExecutionProvider",), cuda=False, bf16=True, ov=False, cpu_bf16=False):
        self._trt, self._ort, self._cuda, self._bf16 = tensorrt, list(ort), cuda, bf16
        self._ov, self._cpu_bf16 = ov, cpu_bf16

    def openvino_cpu(self):
        return self._ov

    def cpu_bf16(self):
        return self._cpu_bf16

    def tensorrt(self):
        return self._trt, "10.14" if self._trt else "no tensorrt here"

    def ort_providers(self):
        return self._ort

    def torch_cuda(self):
        return self._cuda

    def torch_bf16(self):
        return self._bf16


CPU = Machine()
GPU = Machine(tensorrt=True, ort=("CUDAExecutionProvider", "CPUExecutionProvider"), cuda=True)
GPU_NO_TRT = Machine(ort=("CPUExecutionProvider",), cuda=True, bf16=False)
NO_ORT = Machine(ort=())
AVX512 = Machine(ov=True)  # OpenVINO installed on an AVX-512 CPU without bf16 (Skylake-SP, Ice Lake)
AVX512_BF16 = Machine(ov=True, cpu_bf16=True)  # ... with AVX512-BF16 or AMX (Sapphire Rapids, Zen 4)
GPU_AVX512 = Machine(tensorrt=True, ort=("CUDAExecutionProvider", "CPUExecutionProvider"), cuda=True, ov=True)


@pytest.mark.parametrize("machine, backend, device, precision, want", [
    (CPU, "auto", "auto", "auto", ("onnxruntime", "cpu", "fp32")),
    (CPU, "auto", "cpu", "auto", ("onnxruntime", "cpu", "fp32")),
    (NO_ORT, "auto", "auto", "auto", ("torch", "cpu", "fp32")),
    (GPU, "auto", "auto", "auto", ("tensorrt", "cuda", "fp16")),
    (GPU, "auto", "cuda", "fp32", ("tensorrt", "cuda", "fp32")),
    (GPU, "auto", "cpu", "auto", ("onnxruntime", "cpu", "fp32")),  # cpu asked: not TensorRT
    (GPU_NO_TRT, "auto", "cuda", "auto", ("torch", "cuda", "fp16")),  # no bf16 on that GPU
    (CPU, "torch", "auto", "auto", ("torch", "cpu", "fp32")),
    (CPU, "torch", "cpu", "bf16", ("torch", "cpu", "bf16")),
    (GPU, "torch", "cuda:1", "auto", ("torch", "cuda:1", "bf16")),
    (CPU, "onnxruntime", "auto", "fp16", ("onnxruntime", "cpu", "fp16")),  # the mixed fp16 graph
    (GPU, "onnxruntime", "auto", "auto", ("onnxruntime", "cuda", "fp32")),  # onnxruntime-gpu: its CUDA provider
    (GPU, "onnxruntime", "cpu", "auto", ("onnxruntime", "cpu", "fp32")),
    (GPU, "onnxruntime", "cuda", "auto", ("onnxruntime", "cuda", "fp32")),
    (GPU, "tensorrt", "auto", "auto", ("tensorrt", "cuda", "fp16")),
    (GPU, "tensorrt", "cuda:0", "fp32", ("tensorrt", "cuda", "fp32")),
    (CPU, "triton", "auto", "auto", ("triton", "server", "server")),
    # backend auto on a CPU OpenVINO was measured faster on (AVX-512, openvino installed): OpenVINO ...
    (AVX512, "auto", "auto", "auto", ("openvino", "CPU", "fp32")),
    (AVX512_BF16, "auto", "auto", "auto", ("openvino", "CPU", "fp32")),  # fp32: auto never changes the numbers
    (AVX512_BF16, "auto", "cpu", "fp32", ("openvino", "CPU", "fp32")),
    (AVX512_BF16, "auto", "auto", "bf16", ("openvino", "CPU", "bf16")),
    # ... but not for what ONNX Runtime runs (fp16: its mixed graph; int8: more exact, half the memory) ...
    (AVX512_BF16, "auto", "auto", "fp16", ("onnxruntime", "cpu", "fp16")),
    (AVX512_BF16, "auto", "auto", "int8", ("onnxruntime", "cpu", "int8")),
    # ... nor before TensorRT on a CUDA GPU, nor for a CUDA device
    (GPU_AVX512, "auto", "auto", "auto", ("tensorrt", "cuda", "fp16")),
    (GPU_AVX512, "auto", "cpu", "auto", ("openvino", "CPU", "fp32")),  # cpu asked: OpenVINO's CPU
])
def test_the_resolution_table(machine, backend, device, precision, want):
    assert resolve_settings(backend, device, precision, machine) == EngineSettings(*want)


@pytest.mark.parametrize("machine, backend, device, precision, says", [
    (CPU, "onnxruntime", "auto", "bf16", "bf16 runs on backend torch, or openvino"),
    (GPU, "tensorrt", "auto", "bf16", "bf16 runs on backend torch, or openvino"),
    (CPU, "onnxruntime", "cuda", "auto", "onnxruntime-gpu"),
    (GPU, "onnxruntime", "cuda:1", "auto", "CUDA_VISIBLE_DEVICES=1"),
    (GPU, "tensorrt", "cpu", "auto", "runs on a CUDA GPU"),
    (GPU, "tensorrt", "cuda:2", "auto", "CUDA_VISIBLE_DEVICES=2"),
    (CPU, "torch", "cuda", "auto", "no CUDA device"),
    (CPU, "auto", "cuda", "auto", "no CUDA device"),  # cuda asked on a CPU machine: said, not run on the CPU
    (CPU, "auto", "auto", "bf16", "bf16 runs on backend torch, or openvino"),  # no OpenVINO CPU here
    (AVX512, "auto", "auto", "bf16", "does not run natively on this CPU"),  # OpenVINO's, naming the CPU
    (CPU, "triton", "cuda", "auto", "the server's"),
    (CPU, "triton", "auto", "fp16", "the server's"),
    (CPU, "torch", "gpu", "auto", "device must be"),
    (CPU, "torch", "auto", "int4", "precision must be"),
    (CPU, "jax", "auto", "auto", "backend must be"),
])
def test_combinations_that_cannot_hold_are_refused_with_the_fix(machine, backend, device, precision, says):
    with pytest.raises(EngineConfigError, match=says) as err:
        resolve_settings(backend, device, precision, machine)
    assert isinstance(err.value, ValueError)  # a configuration error: one line at start-up


def test_engines_report_what_they_run(tmp_path):
    """The built engine says its resolved settings (for the start-up line and /diagnostics)."""
    from da3_ros.engines import create_engine

    engine = create_engine("torch", "random:da3-small@0", process_res=140)
    assert engine.runs_on == EngineSettings("torch", "cpu", "fp32")
    assert engine.health() == (True, {"device": "cpu", "precision": "fp32"})
    assert engine.describe() == "torch (device cpu, precision fp32)"
    with pytest.raises(EngineConfigError, match="fp32 or fp16"):
        create_engine("onnxruntime", "random:da3-small@0", precision="bf16", cache_dir=str(tmp_path))
    assert not list(tmp_path.iterdir())  # refused before any export


def test_the_node_says_backend_device_and_precision(tmp_path, domain_id, checker):
    from diagnostic_msgs.msg import DiagnosticArray

    from ros_harness import process, write_params

    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth",
                             {"model": "random:da3-small@0", "camera_names": ["front"], "backend": "torch",
                              "diagnostics_period_s": 0.3})
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"):
        checker.spin_until(lambda: len(diags) >= 1, 120, "/diagnostics")
    values = {kv.key: kv.value for kv in diags[-1].status[0].values}
    assert (values["backend"], values["device"], values["precision"]) == ("torch", "cpu", "fp32")
    assert "on torch (device cpu, precision fp32)" in (tmp_path / "node.log").read_text()
    # and a combination that cannot hold stops the start with the fix
    bad = write_params(tmp_path / "bad.yaml", "da3_depth", {"model": "random:da3-small@0", "camera_names": ["front"],
                                                            "backend": "onnxruntime", "precision": "bf16"})
    with process("depth_node", bad, domain_id, tmp_path / "bad.log") as proc:
        assert proc.wait(timeout=60) == 1
    line = next((x for x in (tmp_path / "bad.log").read_text().splitlines() if "cannot start" in x), "")
    assert "EngineConfigError" in line and "bf16 runs on backend torch, or openvino" in line, line


def test_onnxruntime_honours_fp16(tmp_path, soh_images):
    """Precision fp16 on ONNX Runtime runs the mixed fp16 graph (it was ignored: always fp32)."""
    import numpy as np

    from da3_ros.engines import FrameBatch, create_engine
    from da3_ros.engines.onnx_source import read_metadata

    batch = FrameBatch(soh_images[:1])
    preds = {}
    for precision in ("fp32", "fp16"):
        engine = create_engine("onnxruntime", "random:da3-small@3", precision=precision, cache_dir=str(tmp_path),
                               process_res=140)
        assert engine.runs_on == EngineSettings("onnxruntime", "cpu", precision)
        preds[precision] = engine.infer(batch)
        (shape,) = engine._runners
        assert read_metadata(engine._graph_for(shape))["precision"] == precision
    a, b = preds["fp16"].depth.astype(np.float64), preds["fp32"].depth.astype(np.float64)
    assert not np.array_equal(a, b) and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99  # close, not the same graph


# What an onnxruntime-gpu build with TensorRT offers (its get_available_providers(), in its own order)
ORT_GPU_WITH_TRT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("device, available, want", [
    ("cuda", ORT_GPU_WITH_TRT, ["CUDAExecutionProvider", "CPUExecutionProvider"]),  # never TensorRT's provider
    ("auto", ORT_GPU_WITH_TRT, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("cpu", ORT_GPU_WITH_TRT, ["CPUExecutionProvider"]),
    ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("cuda", ["TensorrtExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ("auto", ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ("cpu", ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
])
def test_onnxruntime_providers_are_chosen_for_the_device_never_tensorrts(device, available, want):
    """Issue 23 item 3: CUDA then CPU on a GPU, the CPU for cpu; TensorRT only through backend tensorrt."""
    from da3_ros.engines.onnxruntime_engine import _session_providers, choose_providers

    assert choose_providers(device, available) == want
    # a session given a list (or none) never gets TensorRT's provider either
    assert "TensorrtExecutionProvider" not in _session_providers(ORT_GPU_WITH_TRT, available)
    assert _session_providers(None, available) == choose_providers("auto", available)
    with pytest.raises(EngineConfigError, match="cuda:1"):
        choose_providers("cuda:1", available)


@pytest.mark.parametrize("policy,spinning", [(None, None), ("PASSIVE", "0"), ("passive", "0"), ("ACTIVE", None)])
def test_onnxruntime_threads_wait_passively_where_openmp_s_do(monkeypatch, policy, spinning):
    """OMP_WAIT_POLICY=PASSIVE also stops ONNX Runtime's threads spinning (two processes sharing the cores)."""
    import onnxruntime as ort

    from da3_ros.engines.onnxruntime_engine import session_options

    if policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    so = session_options(ort, threads=2)
    if spinning is None:  # the entry was never set: ONNX Runtime's own default (spinning) holds
        with pytest.raises(Exception, match="allow_spinning"):
            so.get_session_config_entry("session.intra_op.allow_spinning")
    else:
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == spinning
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1 and not so.enable_cpu_mem_arena


def test_onnxruntime_on_the_gpu_means_its_cuda_provider():
    """A build whose only GPU provider is TensorRT's does not count as ONNX Runtime on the GPU (issue 23 item 3)."""
    trt_ep_only = Machine(ort=("TensorrtExecutionProvider", "CPUExecutionProvider"))
    assert resolve_settings("onnxruntime", "auto", "auto", trt_ep_only) == EngineSettings("onnxruntime", "cpu",
                                                                                          "fp32")
    with pytest.raises(EngineConfigError, match="CUDA execution provider"):
        resolve_settings("onnxruntime", "cuda", "auto", trt_ep_only)


NEEDS_GPU = "needs a GPU"  # a shipped config whose file says this may refuse a machine without one


def _shipped_node_configs():
    from conftest import REPO

    return [p for p in sorted((REPO / "config").glob("*.yaml")) if "sources:" not in p.read_text()]  # not players


@pytest.mark.parametrize("path", _shipped_node_configs(), ids=lambda p: p.name)
def test_every_shipped_config_starts_on_this_machine(path):
    """Issue 23.17: a shipped config loads into the node's config and resolves its engine here (CPU-only).

    Only a file that says it needs a GPU may refuse a machine without one.
    """
    from da3_ros.core.config import DepthConfig
    from da3_ros.core.param_file import check_params, read_params_file

    values, unknown = check_params(read_params_file(path))
    assert not unknown, f"{path.name}: names the node does not have: {unknown}"
    cfg = DepthConfig.from_values(values)
    if NEEDS_GPU in path.read_text() and not Hardware().torch_cuda():
        pytest.skip(f"{path.name} says it needs a GPU")
    settings = resolve_settings(cfg.value("backend"), cfg.value("device"), cfg.value("precision"))
    assert settings.backend in ("onnxruntime", "torch", "tensorrt", "triton", "openvino")


def test_an_impossible_device_under_auto_names_what_auto_found_and_would_run():
    """``device: cuda`` under backend auto on a CPU machine: each backend's reason and what device auto runs.

    Not "torch sees no CUDA device" alone: torch was only auto's last resort, ONNX Runtime is what runs here.
    """
    with pytest.raises(EngineConfigError) as err:
        resolve_settings("auto", "cuda", "auto", CPU)
    text = str(err.value)
    assert "no backend sees a CUDA device" in text and "tensorrt not usable: no tensorrt here" in text
    assert "device auto runs backend onnxruntime on cpu here" in text and "use device auto" in text
    with pytest.raises(EngineConfigError, match="device auto runs backend torch on cpu here"):
        resolve_settings("auto", "cuda", "auto", NO_ORT)
    with pytest.raises(EngineConfigError, match=r"^device 'cuda': torch sees no CUDA device"):
        resolve_settings("torch", "cuda", "auto", CPU)  # torch asked for: torch named
