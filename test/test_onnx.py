"""Exported graphs on ONNX Runtime compute what torch computes, on the real photos.

Also: the cache never loads a corrupted file, the ONNX Runtime path runs without torch, and missing pieces
give messages that name the fix.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from da3_ros.engines import BackendUnavailable, FrameBatch, create_engine
from da3_ros.engines.cache import ArtifactCache
from da3_ros.engines.onnx_source import GraphMismatch, OnnxSource, read_metadata
from conftest import module_dir

MIN_CORR = 0.99999


@pytest.fixture(scope="module")
def cache_dir(request, tmp_path_factory):
    for path in module_dir(request, tmp_path_factory, "engine_cache"):
        yield str(path)


def _compare(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    assert a.size == b.size > 0
    corr = 1.0 if np.ptp(b) == 0 and np.array_equal(a, b) else float(np.corrcoef(a, b)[0, 1])
    return corr, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


CASES = [("random:da3-small@3", 504, 1, False), ("random:da3-small@3", 504, 2, False),
         ("random:da3-small@3", 504, 2, True), ("random:da3metric-large@2", 280, 1, False)]
# (the metric family is monocular: its views never meet in the network, so N = 2 adds nothing over small's N = 2
# but a 75 s ViT-L export)


@pytest.mark.parametrize("model,res,n,conditioned", CASES, ids=[f"{m[7:-2]}-{n}v{'-cond' if c else ''}"
                                                               for m, _, n, c in CASES])
def test_onnxruntime_equals_torch_on_real_photos(model, res, n, conditioned, soh_images, cache_dir, record_property):
    images = soh_images[:n] if n <= 2 else soh_images
    K = np.repeat(np.array([[[1000.0, 0, 603.5], [0, 1000.0, 339.5], [0, 0, 1]]]), n, axis=0)
    T = None
    if conditioned:
        T = np.repeat(np.eye(4)[None], n, axis=0)
        T[1, 0, 3] = -0.3  # a 30 cm baseline along x
    batch = FrameBatch(images, K_cam=K, T_cam_world=T)
    ort_pred = create_engine("onnxruntime", model, cache_dir=cache_dir, process_res=res).infer(batch)
    torch_pred = create_engine("torch", model, process_res=res).infer(batch)
    fields = ["depth", "confidence", "sky_mask", "T_cam_world"]
    report = {}
    for f in fields:
        a, b = getattr(ort_pred, f), getattr(torch_pred, f)
        assert (a is None) == (b is None), f
        if a is None:
            continue
        if f == "sky_mask":
            assert (a != b).mean() < 1e-4, "sky masks differ"
            continue
        corr, rel = _compare(a, b)
        report[f] = (corr, rel)
        assert corr >= MIN_CORR and rel < 1e-3, (f, corr, rel)
    record_property("onnxruntime_vs_torch", json.dumps(report))
    print(f"{model} N={n} cond={conditioned}: (correlation, max relative error) {report}")
    assert ort_pred.is_metric == torch_pred.is_metric
    np.testing.assert_allclose(ort_pred.depth_scale, torch_pred.depth_scale, rtol=1e-4)  # from fitted poses


def test_fp16_graph_is_standard_onnx_and_close_to_fp32(tmp_path, soh_images):
    """The TensorRT input: standard-domain ops only, float32 I/O, and its error against fp32 measured here."""
    import onnx
    import onnxruntime as ort

    from da3_ros.engines.graph_io import example_inputs
    from da3_ros.core.preprocess import preprocess_batch

    src = OnnxSource("random:da3-small@3", ArtifactCache(tmp_path))
    hw = (84, 140)  # process_res 140 of the 1208x680 photo: the same operators as at 504, a quarter of the cost
    p32, p16 = src.onnx_for(1, hw, False, "fp32"), src.onnx_for(1, hw, False, "fp16")
    m = onnx.load(str(p16))
    assert {n.domain for n in m.graph.node} <= {"", "ai.onnx"}
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*m.graph.input, *m.graph.output])
    halves = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    assert halves > 0.5 * len(m.graph.initializer)
    assert read_metadata(p16)["precision"] == "fp16"
    x, _, _ = preprocess_batch(soh_images[:1], hw[1])
    feeds = {"images": x[None]}
    assert x.shape[-2:] == hw and set(feeds) == set(example_inputs(1, hw, False))
    r32, r16 = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds) for p in (p32, p16))
    for name, a, b in zip(["depth", "depth_conf"], r16, r32):
        corr, rel = _compare(a, b)
        print(f"fp16 vs fp32 {name}: correlation {corr:.6f}, max relative error {rel:.2e}")
        assert corr > 0.99 and rel < 0.02, (name, corr, rel)


def test_corrupted_cached_graph_is_exported_again_not_loaded(tmp_path):
    src = OnnxSource("random:da3-small@3", ArtifactCache(tmp_path))
    path = src.onnx_for(1, (140, 140), False)
    good = path.read_bytes()
    with open(path, "r+b") as f:  # flip one byte in the middle: still a file, no longer ours
        f.seek(len(good) // 2)
        byte = f.read(1)
        f.seek(len(good) // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert src.onnx_for(1, (140, 140), False) == path
    assert path.read_bytes() == good  # re-exported: the export is deterministic


def test_cache_key_changes_with_each_input(tmp_path):
    src = OnnxSource("random:da3-small@3", ArtifactCache(tmp_path))
    base = dict(n_views=2, hw=(280, 504), conditioned=False, precision="fp32")
    keys = {json.dumps(src.key(**base), sort_keys=True)}
    for change in [dict(n_views=3), dict(hw=(280, 490)), dict(hw=(266, 504)), dict(conditioned=True),
                   dict(precision="fp16")]:
        keys.add(json.dumps(src.key(**{**base, **change}), sort_keys=True))
    keys.add(json.dumps(OnnxSource("random:da3-small@4", ArtifactCache(tmp_path)).key(**base), sort_keys=True))
    assert len(keys) == 7
    assert src.key(**base) == src.key(**base)


def test_a_graph_for_another_rig_is_refused_with_the_fix(tmp_path, soh_images):
    src = OnnxSource("random:da3-small@3", ArtifactCache(tmp_path))
    one_view = src.onnx_for(1, (280, 504), False)
    engine = create_engine("onnxruntime", str(one_view))
    assert engine.variant.name == "da3-small" and "UNTRAINED" in engine.label
    assert engine.infer(FrameBatch(soh_images[:1])).depth.shape == (1, 280, 504)
    with pytest.raises(GraphMismatch, match="da3-ros export"):
        engine.infer(FrameBatch(soh_images[:2]))


def _run_without(module: str, code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where ``module`` cannot be imported (as if not installed)."""
    prelude = f"import sys; sys.modules[{module!r}] = None\n"
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env,
                          cwd="/", timeout=300)


def test_onnxruntime_engine_runs_without_torch(tmp_path, cache_dir):
    """With the graph cached, a process that cannot import torch runs; without it, the error names the export."""
    code = ("import sys, numpy as np\n"
            "from da3_ros.engines import create_engine, FrameBatch\n"
            f"e = create_engine('onnxruntime', 'random:da3-small@3', cache_dir={cache_dir!r})\n"
            "img = np.random.default_rng(0).integers(0, 255, (680, 1208, 3), dtype=np.uint8)\n"
            "p = e.infer(FrameBatch([img]))\n"
            "print('depth', p.depth.shape, 'torch' in sys.modules and sys.modules['torch'] is not None)\n")
    # the 1-view 504x280 graph is in cache_dir from the parity test above; make sure of it here too
    create_engine("onnxruntime", "random:da3-small@3", cache_dir=cache_dir).prepare(1, (280, 504))
    res = _run_without("torch", code)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "depth (1, 280, 504) False" in res.stdout
    res = _run_without("torch", code.replace(repr(cache_dir), repr(str(tmp_path / "empty"))))
    assert res.returncode != 0 and "torch is not installed" in res.stderr and "da3-ros export" in res.stderr
    assert "--fused-attention" in res.stderr  # the graph it would run: the command writes exactly that one
    # A cache filled before attention was fused holds the plain graph only: it still runs (and says so).
    old = tmp_path / "plain_only"
    OnnxSource("random:da3-small@3", ArtifactCache(old)).onnx_for(1, (84, 140), False)
    res = _run_without("torch", code.replace(repr(cache_dir), repr(str(old))).replace(
        "cache_dir=", "process_res=140, cache_dir="))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "depth (1, 84, 140) False" in res.stdout and "running the plain graph" in res.stderr


def test_missing_backends_name_what_to_install():
    res = _run_without("onnxruntime", "from da3_ros.engines import create_engine\n"
                                      "create_engine('onnxruntime', 'random:da3-small')")
    assert res.returncode != 0 and "pip install onnxruntime" in res.stderr
    with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
        create_engine("tensorrt", "random:da3-small")
    with pytest.raises(ValueError, match="backend must be one of"):
        create_engine("tensorflow", "random:da3-small")


def test_auto_picks_onnxruntime_without_tensorrt():
    """The rule, on hardware described to it (not this machine's).

    TensorRT if it starts (never for device cpu), else ONNX Runtime where it runs on the device, else torch.
    """
    from da3_ros.engines import Hardware, resolve_backend

    class Described(Hardware):
        def __init__(self, trt: bool, providers: list[str]):
            self._trt, self._providers = trt, providers

        def tensorrt(self) -> tuple[bool, str]:
            return self._trt, "" if self._trt else "no CUDA context (described)"

        def ort_providers(self) -> list[str]:
            return self._providers

        def openvino_cpu(self) -> bool:
            return False  # an AVX2-only CPU (or no openvino): OpenVINO's rows are test_engine_settings.py's

    cpu_only = ["CPUExecutionProvider"]
    assert resolve_backend("auto", hw=Described(False, cpu_only)) == "onnxruntime"
    assert resolve_backend("auto", hw=Described(True, cpu_only)) == "tensorrt"
    assert resolve_backend("auto", "cpu", hw=Described(True, cpu_only)) == "onnxruntime"  # never TensorRT on cpu
    assert resolve_backend("auto", "cuda", hw=Described(False, cpu_only)) == "torch"  # ORT has no GPU provider
    assert resolve_backend("auto", hw=Described(False, [])) == "torch"


def test_a_large_graph_weights_file_is_verified_with_it(tmp_path):
    """Graphs over 2 GB keep their weights in <graph>.data: a corrupted weights file discards both."""
    cache = ArtifactCache(tmp_path)
    graph = cache.path_for("onnx", {"k": 1}, "onnx")
    graph.write_bytes(b"graph")
    data = graph.with_name(graph.name + ".data")
    data.write_bytes(b"weights" * 1000)
    cache.seal(graph, {"k": 1})
    assert cache.verified(graph)
    data.write_bytes(b"weightz" * 1000)
    assert not cache.verified(graph)
    assert not graph.exists() and not data.exists()


def test_fixed_shape_engines_keep_at_most_two_runners(tmp_path):
    """N and N-1 (a camera dropped) stay loaded; a third shape releases the least recently used."""
    from da3_ros.engines.fixed_shape import MAX_RUNNERS, FixedShapeEngine

    class Counting(FixedShapeEngine):
        backend = "counting"
        made: list = []

        def _make_runner(self, shape):
            self.made.append(shape)
            return object()

    e = Counting("random:da3-small@3", cache_dir=str(tmp_path))
    a, b, c = (3, (280, 504), False), (2, (280, 504), False), (1, (280, 504), False)
    for shape in (a, b, a, c, a, b):
        e._runner(shape)
    assert MAX_RUNNERS == 2 and len(e._runners) == 2
    assert e.made == [a, b, c, b]  # a stayed loaded (used last), b was evicted by c and made again


def test_an_export_prepared_ahead_runs_at_a_lower_priority(tmp_path):
    """The N-1 graph and the temporal windows are exported beside a running forward: niceness +10 for them."""
    from da3_ros.engines.onnx_source import AHEAD_NICE, _run_export

    ours = os.nice(0)
    # the parent renices the child after starting it: wait (up to 60 s on a loaded machine) for that to land
    waits = ("import os, sys, time\nt = time.monotonic()\n"
             f"while os.nice(0) == {ours} and time.monotonic() - t < 60: time.sleep(0.01)\n"
             "sys.stderr.write(str(os.nice(0)))")
    rc, err = _run_export([sys.executable, "-c", waits], tmp_path, AHEAD_NICE)
    assert rc == 0 and int(err.strip()) == min(19, ours + AHEAD_NICE) and AHEAD_NICE >= 5
    code = "import os, sys, time; time.sleep(0.5); sys.stderr.write(str(os.nice(0)))"
    rc, err = _run_export([sys.executable, "-c", code], tmp_path)  # a graph needed now: our own priority
    assert rc == 0 and int(err.strip()) == ours
