"""TensorRT backend: plan cache keys, corrupted-plan rejection, the parity gate, and a clear error without TensorRT.

Runs without TensorRT or a GPU: only the pure parts are exercised here; nothing of TensorRT is mocked. Where
TensorRT "imports but cannot start" is needed, ``tensorrt_status`` (the one probe every caller asks) is patched,
not the machine (issue 17).
"""
import logging

import numpy as np
import pytest

from da3_ros.engines.cache import ArtifactCache
from da3_ros.engines import BackendUnavailable, create_engine, resolve_backend
from da3_ros.engines import tensorrt_engine as trt_engine
from da3_ros.engines.parity import EngineParityError, check_parity, default_parity_names, parity
from da3_ros.engines.tensorrt_engine import (
    TensorRTOutOfMemory,
    TensorRTRunner,
    TensorRTUnavailable,
    create_context,
    engine_key,
    flags_to_clear,
    install_hint,
    plan_path,
    tensorrt_status,
)

CANNOT_START = ("TensorRT 10.3.0 imports but cannot start: trt.Builder(logger) failed (TypeError: pybind11::init(): "
                "factory function returned nullptr)")

BASE = dict(onnx_sha256="a" * 64, n_views=2, hw=(280, 504), precision="fp32", trt_version="10.14.1.48",
            gpu="NVIDIA H100 80GB HBM3 (sm_90)")


@pytest.mark.parametrize("field,value", [
    ("onnx_sha256", "b" * 64),
    ("n_views", 3),
    ("hw", (504, 280)),  # same numbers, transposed
    ("hw", (280, 518)),
    ("precision", "fp16"),
    ("trt_version", "11.0.0.10"),
    ("gpu", "NVIDIA H100 80GB HBM3 (sm_89)"),  # same model name, other compute capability
    ("gpu", "Orin (sm_87)"),
])
def test_engine_key_changes_with_each_field(tmp_path, field, value):
    cache = ArtifactCache(tmp_path)
    changed = engine_key(**{**BASE, field: value})
    assert changed != engine_key(**BASE)
    assert plan_path(cache, changed) != plan_path(cache, engine_key(**BASE))


def test_engine_key_is_stable_for_equal_inputs(tmp_path):
    cache = ArtifactCache(tmp_path)
    assert engine_key(**BASE) == engine_key(**{**BASE, "hw": [280, 504]})
    assert plan_path(cache, engine_key(**BASE)) == plan_path(ArtifactCache(tmp_path), engine_key(**BASE))


def test_engine_key_rejects_unknown_precision():
    with pytest.raises(ValueError, match="precision"):
        engine_key(**{**BASE, "precision": "int8"})


@pytest.mark.parametrize("corrupt", ["flip", "truncate", "append"])
def test_corrupted_cached_plan_is_deleted_not_loaded(tmp_path, corrupt):
    cache = ArtifactCache(tmp_path)
    key = engine_key(**BASE)
    path = plan_path(cache, key)
    plan = bytes(range(256)) * 64
    cache.store(path, plan, key)
    assert cache.load_verified(path) == plan

    data = bytearray(path.read_bytes())
    if corrupt == "flip":
        data[1000] ^= 0x01
    elif corrupt == "truncate":
        del data[-1:]
    else:
        data += b"\x00"
    path.write_bytes(bytes(data))

    assert cache.load_verified(path) is None  # the runner then rebuilds instead of deserialising
    assert not path.exists()
    assert cache.load_verified(path) is None


def test_plan_for_another_key_is_not_found(tmp_path):
    cache = ArtifactCache(tmp_path)
    key = engine_key(**BASE)
    cache.store(plan_path(cache, key), b"plan", key)
    assert cache.load_verified(plan_path(cache, engine_key(**{**BASE, "trt_version": "10.15.0"}))) is None


def _depth(seed=0, shape=(1, 2, 28, 42)):
    return np.random.default_rng(seed).uniform(0.5, 20.0, shape).astype(np.float32)


def test_parity_identical_outputs():
    d, c = _depth(0), _depth(1)
    stats = parity({"depth": d, "depth_conf": c}, {"depth": d.copy(), "depth_conf": c.copy()},
                   ["depth", "depth_conf"])
    for corr, rel in stats.values():
        assert corr == pytest.approx(1.0, abs=1e-12) and rel == 0.0
    assert check_parity({"depth": d}, {"depth": d}, ["depth"], 0.999, 0.05, "10.14.1") == parity(
        {"depth": d}, {"depth": d}, ["depth"])


def test_parity_constant_outputs():
    ones = np.ones((1, 2, 4, 4), np.float32)
    assert parity({"sky": ones}, {"sky": ones}, ["sky"])["sky"] == (1.0, 0.0)
    assert parity({"sky": ones * 0}, {"sky": ones}, ["sky"])["sky"] == (0.0, 1.0)


def test_scaled_output_fails_the_gate():
    d = _depth()
    corr, rel = parity({"depth": 1.5 * d}, {"depth": d}, ["depth"])["depth"]
    assert corr == pytest.approx(1.0)  # correlation alone would miss a scale error
    assert rel == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(EngineParityError) as e:
        check_parity({"depth": 1.5 * d}, {"depth": d}, ["depth"], 0.999, 0.05, "10.3.0.30")
    msg = str(e.value)
    assert "depth" in msg and "0.999" in msg and "0.05" in msg and "10.3.0.30" in msg
    assert "10.14" in msg  # names the known TensorRT 10.3 scale bug


def test_noisy_output_fails_and_names_only_the_bad_output():
    d, c = _depth(0), _depth(1)
    noisy = d + np.random.default_rng(2).normal(0.0, 3.0, d.shape).astype(np.float32)
    corr, rel = parity({"depth": noisy}, {"depth": d}, ["depth"])["depth"]
    assert corr < 0.99 and rel > 0.05
    with pytest.raises(EngineParityError) as e:
        check_parity({"depth": noisy, "depth_conf": c}, {"depth": d, "depth_conf": c}, ["depth", "depth_conf"],
                     0.999, 0.05, "11.0.0")
    msg = str(e.value)
    assert "depth:" in msg and "depth_conf:" not in msg and "11.0.0" in msg
    assert "10.14" not in msg  # no stale-version hint for a fixed TensorRT


def test_non_finite_output_fails():
    d = _depth()
    bad = d.copy()
    bad[0, 0, 0, 0] = np.nan
    corr, rel = parity({"depth": bad}, {"depth": d}, ["depth"])["depth"]
    assert np.isnan(corr) and rel == np.inf
    with pytest.raises(EngineParityError):
        check_parity({"depth": bad}, {"depth": d}, ["depth"], 0.999, 0.05, "10.14.1")


@pytest.mark.parametrize("ours,ref,names", [
    ({"depth": np.zeros((1, 2, 4, 4))}, {"depth": np.zeros((1, 2, 4, 5))}, ["depth"]),
    ({"depth": np.zeros((1, 2, 4, 4))}, {"depth": np.zeros((2, 4, 4))}, ["depth"]),
    ({"depth": np.zeros((1, 0, 4, 4))}, {"depth": np.zeros((1, 0, 4, 4))}, ["depth"]),
    ({"depth": np.zeros((1, 2, 4, 4))}, {"depth": np.zeros((1, 2, 4, 4))}, []),
    ({"depth": np.zeros((1, 2, 4, 4))}, {"depth": np.zeros((1, 2, 4, 4))}, ["sky"]),
])
def test_parity_rejects_bad_arguments(ours, ref, names):
    with pytest.raises(ValueError):
        parity(ours, ref, names)


def test_the_gate_input_is_fixed_and_plausible():
    """The parity gate's input (the export's example inputs): seeded, shaped for the engine, a sane rig."""
    from da3_ros.engines.graph_io import example_inputs

    feeds, again = example_inputs(3, (28, 42), True), example_inputs(3, (28, 42), True)
    shapes = {"images": (1, 3, 3, 28, 42), "extrinsics": (1, 3, 4, 4), "intrinsics": (1, 3, 3, 3)}
    assert all(np.array_equal(feeds[n], again[n]) for n in shapes)
    assert {n: f.shape for n, f in feeds.items()} == shapes
    assert all(f.dtype == np.float32 for f in feeds.values())
    assert abs(feeds["images"].mean()) < 0.1 and 0.9 < feeds["images"].std() < 1.1
    T = feeds["extrinsics"][0]
    np.testing.assert_array_equal(T[:, :3, :3], np.broadcast_to(np.eye(3), (3, 3, 3)))
    np.testing.assert_array_equal(T[0], np.eye(4))
    assert np.median(np.linalg.norm(T[1:, :3, 3], axis=1)) == pytest.approx(1.0)
    K = feeds["intrinsics"][0, 0]
    assert K[0, 2] == 21 and K[1, 2] == 14 and K[0, 0] == K[1, 1] > 0 and K[2, 2] == 1


def test_default_parity_names_skip_poses():
    assert default_parity_names(["depth", "depth_conf", "extrinsics_out", "intrinsics_out"]) == [
        "depth", "depth_conf"]
    assert default_parity_names(["depth", "sky"]) == ["depth", "sky"]


def test_without_tensorrt_the_runner_says_what_to_install(tmp_path):
    ok, reason = tensorrt_status()
    if ok:
        pytest.skip("TensorRT and a CUDA GPU are present here")
    assert isinstance(reason, str) and reason
    with pytest.raises(TensorRTUnavailable, match="pip install tensorrt") as e:
        TensorRTRunner(tmp_path / "model.onnx", ArtifactCache(tmp_path), 2, (280, 504), "fp32")
    assert "CUDA GPU" in str(e.value)
    assert not any(tmp_path.glob("trt-*"))  # nothing was built or cached


@pytest.fixture
def trt_cannot_start(monkeypatch):
    """TensorRT 10.3 installed but without a CUDA context (what JetPack's TensorRT in a wrong container does)."""
    import da3_ros.engines as engines

    monkeypatch.setattr(trt_engine, "tensorrt_status", lambda: (False, CANNOT_START))
    monkeypatch.setattr(engines.settings, "_SAID", set())  # a fresh process: nothing said yet


def test_auto_falls_back_to_the_cpu_runtime_and_says_why_once(trt_cannot_start, caplog):
    """Not TensorRT: the CPU's runtime by auto's rule (OpenVINO on an AVX-512 CPU, else ONNX Runtime), said once."""
    from da3_ros.engines import Hardware

    want, name = ("openvino", "OpenVINO") if Hardware().openvino_cpu() else ("onnxruntime", "ONNX Runtime")
    with caplog.at_level(logging.WARNING, logger="da3_ros.engines"):
        assert resolve_backend("auto") == want
        engine = create_engine("auto", "random:da3-small")  # resolves again: still said once
    assert engine.runs_on.backend == want
    said = [r for r in caplog.records if "not TensorRT" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert CANNOT_START in said[0].getMessage() and f"running on {name} instead" in said[0].getMessage()


def test_explicit_tensorrt_that_cannot_start_is_a_typed_error_naming_what_is_missing(trt_cannot_start, tmp_path):
    with pytest.raises(TensorRTUnavailable) as e:
        create_engine("tensorrt", "random:da3-small", cache_dir=str(tmp_path))
    assert isinstance(e.value, BackendUnavailable)  # what the node and the CLI catch and report
    msg = str(e.value)
    assert CANNOT_START in msg and "tensorrt-cu1" in msg and "onnxruntime" in msg
    assert not any(tmp_path.iterdir())  # refused before anything was exported or built


@pytest.mark.parametrize("cuda,jetson,wants,not_wanted", [
    ("12.4", False, ["pip install tensorrt-cu12"], ["cu13", "JetPack"]),
    ("13.0", False, ["pip install tensorrt-cu13"], ["cu12", "JetPack"]),
    (None, False, ["tensorrt-cu12", "tensorrt-cu13", "580"], ["JetPack"]),  # CPU torch: both, with the driver
    ("12.6", True, ["JetPack", "python3-libnvinfer", "--system-site-packages"], ["pip install"]),
])
def test_install_hint_names_the_wheel_for_this_cuda(cuda, jetson, wants, not_wanted):
    hint = install_hint(cuda, jetson)
    assert all(w in hint for w in wants), hint
    assert not any(w in hint for w in not_wanted), hint
    assert "pip install tensorrt " not in hint + " "  # the bare name resolves to the CUDA 13 build


def test_fp32_engines_are_built_without_tf32():
    """TF32 (on by default in TensorRT 10.x and 11.x) is cleared for fp32 only; the names are the API's.

    BuilderFlag.TF32 and IBuilderConfig.clear_flag exist in tensorrt-cu12-bindings 10.3.0 and
    tensorrt-cu13-bindings 11.4.0.106 (checked on the wheels' tensorrt.so; the libraries do not load here).
    """
    assert flags_to_clear("fp32") == ("TF32",)
    assert flags_to_clear("fp16") == ()
    with pytest.raises(ValueError, match="precision"):
        flags_to_clear("int8")


class _EngineWithoutMemory:
    """Stands in for a deserialized ICudaEngine (none can exist without a GPU): the two members used here."""

    device_memory_size_v2 = 3 << 30

    def __init__(self, context):
        self.context = context

    def create_execution_context(self):
        return self.context  # TensorRT returns None, without raising, when activations do not fit


def test_execution_context_that_cannot_be_created_is_a_typed_error():
    ctx = object()
    assert create_context(_EngineWithoutMemory(ctx), "the 2-view engine") is ctx
    with pytest.raises(TensorRTOutOfMemory) as e:
        create_context(_EngineWithoutMemory(None), "the 2-view 504x280 engine")
    msg = str(e.value)
    assert isinstance(e.value, BackendUnavailable)
    assert "the 2-view 504x280 engine" in msg and "create_execution_context() returned None" in msg
    assert "3072 MiB" in msg and "fewer views" in msg


def test_status_is_probed_once_per_process():
    """The probe creates a CUDA context where TensorRT exists: it runs once, every caller gets its answer."""
    assert tensorrt_status() is tensorrt_status()
    assert tensorrt_status.cache_info().hits >= 1
