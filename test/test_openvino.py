"""Backend openvino (issue 26): parity with torch on the real photos, the gate, the cache, named refusals.

fp32, bf16 (OpenVINO's CPU hint; bf16 rows skipped with the reason where the CPU has neither AVX512-BF16 nor
AMX) and int8 (weights only, NNCF) against upstream's network on torch, at process_res 140 with da3-small's random
weights; the gate refusing a compile with its figures and remembering it; a second start that neither compiles nor
gates; the settings table.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from da3_ros.core.config import DepthConfig
from da3_ros.engines import EngineConfigError, FrameBatch, Hardware, create_engine, engine_from_config, resolve_settings
from da3_ros.engines import openvino_engine as ove
from da3_ros.engines.cache import ArtifactCache
from da3_ros.engines.cpu_features import cpu_has_avx512, cpu_has_bf16
from da3_ros.engines.onnx_source import OnnxSource
from conftest import copy_graphs, module_dir

MODEL = "random:da3-small@3"
RES = 140
# documented tolerances against torch fp32 (README, Engines: OpenVINO): fp32 as the other exported graphs; bf16 the
# issue's accuracy target (depth correlation >= 0.999, max relative error <= 5e-3)
TOL = {"fp32": (0.99999, 1e-4), "bf16": (0.999, 5e-3), "int8": (0.999, 5e-3)}  # int8: weights only (NNCF)
NEEDS_BF16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has neither AVX512-BF16 nor AMX: OpenVINO's "
                                "bf16 is refused here (test_bf16_is_refused_by_name_where_the_cpu_lacks_it)")


@pytest.fixture(scope="module")
def cache_dir(request, tmp_path_factory):
    for path in module_dir(request, tmp_path_factory, "ov_cache"):
        yield str(path)


def _batch(images, n, conditioned):
    K = np.repeat(np.array([[[1000.0, 0, 603.5], [0, 1000.0, 339.5], [0, 0, 1]]]), n, axis=0)
    T = None
    if conditioned:
        T = np.repeat(np.eye(4)[None], n, axis=0)
        T[1, 0, 3] = -0.3  # a 30 cm baseline along x
    return FrameBatch(images[:n], K_cam=K, T_cam_world=T)


def _compare(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    assert a.size == b.size > 0
    return float(np.corrcoef(a, b)[0, 1]), float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def graph_56(request, tmp_path_factory):
    """A cache holding the 1-view 56x28 graph the compile tests start from (each on a private copy)."""
    for path in module_dir(request, tmp_path_factory, "ov_graph_56"):
        OnnxSource(MODEL, ArtifactCache(path)).onnx_for(1, (28, 56), False)
        yield path


@pytest.fixture
def cache_56(graph_56, tmp_path) -> Path:
    copy_graphs(graph_56, tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def torch_preds(soh_images):
    engine = create_engine("torch", MODEL, process_res=RES)
    return {(n, c): engine.infer(_batch(soh_images, n, c)) for n, c in ((1, False), (2, False), (2, True))}


CASES = [("fp32", 1, False), ("fp32", 2, False), ("fp32", 2, True), ("bf16", 1, False), ("bf16", 2, False),
         ("int8", 2, False)]


@pytest.mark.parametrize("precision,n,conditioned", CASES, ids=[f"{p}-{n}v{'-cond' if c else ''}" for p, n, c in CASES])
def test_openvino_equals_torch_on_real_photos(precision, n, conditioned, soh_images, torch_preds, cache_dir,
                                              record_property):
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX")
    engine = create_engine("openvino", MODEL, precision=precision, cache_dir=cache_dir, process_res=RES, threads=2)
    assert engine.describe() == f"openvino (device CPU, precision {precision})"
    pred, ref = engine.infer(_batch(soh_images, n, conditioned)), torch_preds[(n, conditioned)]
    min_corr, max_rel = TOL[precision]
    report = {}
    for f in ("depth", "confidence", "T_cam_world"):
        corr, rel = _compare(getattr(pred, f), getattr(ref, f))
        report[f] = (corr, rel)
        if f == "depth":
            assert corr >= min_corr and rel <= max_rel, (f, corr, rel)
    assert (pred.sky_mask is None) == (ref.sky_mask is None)
    record_property("openvino_vs_torch", json.dumps(report))
    print(f"openvino {precision} N={n} cond={conditioned}: (correlation, max relative error) {report}")


def test_gate_refuses_a_compile_with_its_figures_and_never_compiles_it_again(soh_images, cache_56, monkeypatch):
    """A gate the compile cannot meet (correlation 1, error 0): refused with the figures, remembered, not cached."""
    monkeypatch.setitem(ove.GATES, "fp32", (1.0, 0.0))
    monkeypatch.setattr(ove, "_REFUSED", {})  # this test's refusal is forgotten after it
    t0 = time.perf_counter()
    engine = create_engine("openvino", MODEL, precision="fp32", cache_dir=str(cache_56), process_res=56)
    with pytest.raises(ove.OpenVinoRefused, match=r"depth: correlation [01]\.\d{6} \(need >= 1\.0\), "
                       r"max relative error \d\.\d+e-\d+ \(need <= 0\.0\)"):
        engine.infer(FrameBatch(soh_images[:1]))
    first_s = time.perf_counter() - t0  # a compile and its gate, refused
    assert not list(cache_56.glob(f"{ove.GATE_KIND}-*.json")), "a refused compile left a gate record"
    compiles = []
    monkeypatch.setattr(ove.OpenVinoRunner, "__init__", lambda *a, **k: compiles.append(a))
    t0 = time.perf_counter()
    with pytest.raises(ove.OpenVinoRefused, match="Not compiled again"):
        create_engine("openvino", MODEL, precision="fp32", cache_dir=str(cache_56), process_res=56).infer(
            FrameBatch(soh_images[:1]))
    assert compiles == [] and time.perf_counter() - t0 < first_s  # refused at once, no compile nor gate


@NEEDS_BF16
def test_auto_runs_fp32_where_the_gate_refuses_bf16_and_says_so(soh_images, cache_56, monkeypatch):
    monkeypatch.setitem(ove.GATES, "bf16", (1.0, 0.0))
    monkeypatch.setattr(ove, "_REFUSED", {})
    engine = create_engine("openvino", MODEL, precision="auto", cache_dir=str(cache_56), process_res=56)
    assert engine.runs_on.precision == "bf16"
    pred = engine.infer(FrameBatch(soh_images[:1]))
    assert np.isfinite(pred.depth).all()
    ok, values = engine.health()
    assert ok and "1-view 56x28 in fp32" in values["openvino_fallback"] and "correlation" in values["openvino_fallback"]
    assert "in fp32 (bf16 refused" in engine.describe()


def test_backend_auto_runs_a_shape_openvino_refuses_on_onnxruntime_and_says_so(soh_images, cache_56, monkeypatch):
    """Backend auto where its rule picks OpenVINO: a compile the gate refuses (any precision) runs on ONNX Runtime.

    The plain fp32 graph on ONNX Runtime's CPU provider, what auto ran before it took OpenVINO: the same numbers as
    ``backend: onnxruntime`` on that graph, said in the log, the start-up line and /diagnostics.
    """
    monkeypatch.setattr(Hardware, "openvino_cpu", lambda self: True)  # the rule's answer on an AVX-512 CPU
    for precision in ove.OV_PRECISIONS:
        monkeypatch.setitem(ove.GATES, precision, (1.0, 0.0))
    monkeypatch.setattr(ove, "_REFUSED", {})
    engine = create_engine("auto", MODEL, precision="auto", cache_dir=str(cache_56), process_res=56)
    assert engine.runs_on.backend == "openvino"
    pred = engine.infer(FrameBatch(soh_images[:1]))
    (shape,) = engine._runners
    assert type(engine._runners[shape]).__name__ == "OrtRunner"
    ok, values = engine.health()
    assert ok and "1-view 56x28 on ONNX Runtime" in values["openvino_fallback"]
    assert "correlation" in values["openvino_fallback"] and "on ONNX Runtime (OpenVINO refused it" in engine.describe()
    graph = engine._graph_for(shape)
    ort = create_engine("onnxruntime", str(graph), cache_dir=str(cache_56), process_res=56)
    np.testing.assert_array_equal(pred.depth, ort.infer(FrameBatch(soh_images[:1])).depth)


def test_second_start_loads_the_compiled_model_and_skips_the_gate(soh_images, cache_56, monkeypatch):
    first = create_engine("openvino", MODEL, precision="fp32", cache_dir=str(cache_56), process_res=56)
    a = first.infer(FrameBatch(soh_images[:1]))
    blobs = sorted(p.name for p in (cache_56 / "openvino").iterdir())
    assert blobs and list(cache_56.glob(f"{ove.GATE_KIND}-*.json"))
    gated = []
    monkeypatch.setattr(ove, "check_parity_ov", lambda *a, **k: gated.append(a))
    ove._REFUSED.clear()
    second = create_engine("openvino", MODEL, precision="fp32", cache_dir=str(cache_56), process_res=56)
    b = second.infer(FrameBatch(soh_images[:1]))
    assert gated == [] and sorted(p.name for p in (cache_56 / "openvino").iterdir()) == blobs
    np.testing.assert_array_equal(a.depth, b.depth)


class Machine(Hardware):
    def __init__(self, bf16: bool):
        self._bf16 = bf16

    def cpu_bf16(self):
        return self._bf16


@pytest.mark.parametrize("device, precision, bf16, want", [
    ("auto", "auto", True, ("openvino", "CPU", "bf16")),
    ("cpu", "auto", False, ("openvino", "CPU", "fp32")),
    ("CPU", "fp32", True, ("openvino", "CPU", "fp32")),
    ("cpu", "int8", False, ("openvino", "CPU", "int8")),  # int8 weights: any CPU (no bf16 needed)
    ("gpu", "auto", True, ("openvino", "GPU", "fp16")),  # an Intel GPU's own precision
    ("GPU.1", "fp16", False, ("openvino", "GPU.1", "fp16")),
    ("gpu", "fp32", True, ("openvino", "GPU", "fp32")),
    ("NPU", "auto", True, ("openvino", "NPU", "fp16")),
    ("NPU", "fp32", True, ("openvino", "NPU", "fp32")),
    ("AUTO", "auto", True, ("openvino", "AUTO", "fp32")),
])
def test_openvino_settings(device, precision, bf16, want):
    s = resolve_settings("openvino", device, precision, Machine(bf16))
    assert (s.backend, s.device, s.precision) == want


@pytest.mark.parametrize("device, precision, bf16, match", [
    ("cuda", "auto", True, r"CPU, GPU .*NPU or AUTO .* got device 'cuda'"),
    ("cpu", "fp16", True, r"fp16 runs on an Intel GPU or NPU .*not on device CPU: use fp32, bf16"),
    ("AUTO", "fp16", True, r"not on device AUTO"),
    ("GPU", "bf16", True, r"bf16 does not run natively on device GPU.*precision fp16, fp32 or auto"),
])
def test_openvino_refusals_name_the_fix(device, precision, bf16, match):
    with pytest.raises(EngineConfigError, match=match):
        resolve_settings("openvino", device, precision, Machine(bf16))


def test_bf16_is_refused_by_name_where_the_cpu_lacks_it_and_auto_takes_fp32():
    with pytest.raises(EngineConfigError, match="neither AVX512-BF16 nor AMX.*precision fp32 or auto"):
        resolve_settings("openvino", "cpu", "bf16", Machine(False))
    want = "bf16" if cpu_has_bf16() else "fp32"
    assert resolve_settings("openvino", "auto", "auto").precision == want  # this machine's CPU


def test_a_device_openvino_does_not_list_is_refused_at_construction(tmp_path):
    with pytest.raises(EngineConfigError, match=r"lists no device 'NPU' here .*use device CPU"):
        create_engine("openvino", MODEL, device="NPU", precision="fp32", cache_dir=str(tmp_path))
    with pytest.raises(EngineConfigError, match=r"lists no device 'GPU.1'"):
        ove.check_device_listed("GPU.1", ["CPU", "GPU.0"])
    ove.check_device_listed("GPU", ["CPU", "GPU.0"])
    ove.check_device_listed("AUTO", ["CPU"])


def test_depth_config_runs_backend_openvino_in_process(soh_images, cache_dir):
    """The node's path to the engine (DepthConfig -> engine_from_config): said at start-up and in /diagnostics."""
    cfg = DepthConfig.from_values({"backend": "openvino", "model": MODEL, "process_res": 56,
                                   "engine_cache_dir": cache_dir})
    engine = engine_from_config(cfg)
    want = "bf16" if cpu_has_bf16() else "fp32"
    assert engine.describe().startswith(f"openvino (device CPU, precision {want})")
    assert engine.health()[1]["precision"] == want
    assert engine.infer(FrameBatch(soh_images)).depth.shape[0] == 2


def test_a_corrupt_compiled_blob_is_deleted_and_compiled_again(soh_images, cache_56):
    """Same size, bytes changed mid-file (what OpenVINO's own header check cannot see): the seal catches it."""
    a = create_engine("openvino", MODEL, precision="fp32", cache_dir=str(cache_56), process_res=56).infer(
        FrameBatch(soh_images[:1]))
    (blob,) = (cache_56 / "openvino").glob("*.blob")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = bytes(4096)
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    b = create_engine("openvino", MODEL, precision="fp32", cache_dir=str(cache_56), process_res=56).infer(
        FrameBatch(soh_images[:1]))
    (again,) = (cache_56 / "openvino").glob("*.blob")
    assert again.read_bytes() != bytes(data), "the corrupt blob was kept"
    np.testing.assert_array_equal(a.depth, b.depth)


@pytest.mark.skipif(not cpu_has_avx512(), reason="needs an AVX-512 CPU: the blob written again is one compiled "
                    "with AVX-512, imported by an OpenVINO held to AVX2 (ONEDNN_MAX_CPU_ISA)")
def test_a_blob_openvino_writes_again_for_another_cpu_is_sealed_again(soh_images, cache_56):
    """A cache used by two CPUs (a fleet's shared or copied cache): OpenVINO rewrites a blob under the same name.

    Held to AVX2, OpenVINO cannot import the blob compiled with AVX-512, so it compiles again and writes the blob
    over the old one. The old seal was kept, so the next start deleted a good blob and compiled again.
    """
    import os
    import subprocess
    import sys

    create_engine("openvino", MODEL, precision="fp32", cache_dir=str(cache_56), process_res=56).infer(
        FrameBatch(soh_images[:1]))
    (blob,) = (cache_56 / "openvino").glob("*.blob")
    first = blob.read_bytes()
    code = (f"from da3_ros.engines import create_engine; create_engine('openvino', {MODEL!r}, precision='fp32', "
            f"cache_dir={str(cache_56)!r}, process_res=56).prepare(1, (28, 56), False)")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert blob.read_bytes() != first, "OpenVINO held to AVX2 imported the AVX-512 blob: nothing to test"
    assert ArtifactCache(cache_56).verified(blob), "the blob OpenVINO wrote again kept its old seal"


def _resident_mb_under(root: Path) -> float:
    """Resident MB, in this process, of the files it maps under ``root`` (/proc/self/smaps)."""
    total, inside, prefix = 0.0, False, str(root.resolve()) + "/"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            inside = len(head) >= 6 and head[5].startswith(prefix)
        elif inside and line.startswith("Rss:"):
            total += int(head[1]) / 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="Linux's /proc/self/smaps is read")
def test_the_loaded_blobs_mapped_pages_are_dropped_and_the_depth_is_the_same(soh_images, cache_56):
    """A loaded blob's mapped pages are dropped after the load; the depth is the same bits.

    OpenVINO keeps the blob mapped but runs from its own copy of the weights, so the mapped pages (resident,
    counted in RSS and in a container's memory limit) are dead weight; the next inference computes what the
    compiling engine computed.
    """
    first = create_engine("openvino", MODEL, precision="fp32", cache_dir=str(cache_56), process_res=56).infer(
        FrameBatch(soh_images[:1]))
    (blob,) = (cache_56 / "openvino").glob("*.blob")
    loaded = create_engine("openvino", MODEL, precision="fp32", cache_dir=str(cache_56), process_res=56)
    pred = loaded.infer(FrameBatch(soh_images[:1]))
    blob_mb = blob.stat().st_size / 2**20
    assert _resident_mb_under(cache_56) < 0.1 * blob_mb, f"{blob_mb:.0f} MB blob still resident"
    np.testing.assert_array_equal(pred.depth, first.depth)


def test_build_engine_compiles_ahead_and_the_next_start_only_loads(tmp_path):
    """``da3-ros build-engine --backend openvino``: graph, compiled blob and gate record in the cache, ahead.

    The second run (what the node's start then does) finds all three: no export, no compile, no gate (the
    gate's log line is absent and no cache file changes).
    """
    import subprocess

    cmd = ["da3-ros", "build-engine", "--model", "random:da3-small@0", "--views", "1", "--height", "56",
           "--width", "70", "--backend", "openvino", "--cache-dir", str(tmp_path / "cache")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and "openvino engine for" in first.stdout, first.stderr[-2000:]
    assert "compile parity" in first.stderr
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock"}
    assert any(p.suffix == ".blob" for p in files) and any(p.name.startswith("ov-gate-") for p in files)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "compile parity" not in second.stderr, second.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*")
            if p.is_file() and p.suffix != ".lock"} == files
