"""A TensorRT engine the parity gate (or GPU memory) refuses: remembered, never rebuilt; auto falls back (issue 23).

TensorRT cannot run here: ``trt_standin`` replaces only TensorRT's own calls (build, deserialise, bind, execute)
and makes ``tensorrt_status`` answer TensorRT 10.3 (JetPack 6), as test_tensorrt.py does. The plan cache, the
pending plan, the parity gate, its reference (the fp32 graph on ONNX Runtime), the refusal memory and the ONNX
Runtime fallback are the real ones, on a real export of random weights at a tiny size.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from da3_ros.engines import BackendUnavailable, create_engine
from da3_ros.engines import tensorrt_engine as trt_engine
from da3_ros.engines.graph_io import example_inputs
from da3_ros.engines.onnx_source import OnnxSource
from da3_ros.engines.onnxruntime_engine import OrtRunner
from trt_standin import JETPACK6_TRT, install
from conftest import copy_graphs, module_dir

MODEL = "random:da3-small@0"
HW = (28, 42)


@pytest.fixture
def exports(monkeypatch):
    """Every export of a graph in this test (the real export runs; this only counts it)."""
    done: list[tuple] = []
    real = OnnxSource._export

    def counted(self, paths, hw, conditioned, precision, fused_attention, background, sealed):
        done.extend((n_views, tuple(hw), conditioned, precision, fused_attention) for n_views in paths)
        return real(self, paths, hw, conditioned, precision, fused_attention, background, sealed)

    monkeypatch.setattr(OnnxSource, "_export", counted)
    return done


@pytest.fixture(scope="module")
def shared_cache(request, tmp_path_factory):
    for path in module_dir(request, tmp_path_factory, "trt_refusal_cache"):
        yield str(path)


def _feeds():
    return example_inputs(1, HW, False)


def test_auto_falls_back_once_to_onnxruntime_with_one_export_and_never_rebuilds(monkeypatch, tmp_path, exports,
                                                                                 caplog):
    runner = install(monkeypatch, depth_scale=1.5)  # JetPack 6's depth-scale bug: the gate refuses
    engine = create_engine("auto", MODEL, precision="fp32", cache_dir=str(tmp_path))
    assert engine.runs_on.backend == "tensorrt" and engine.fallback
    with caplog.at_level(logging.WARNING, logger="da3_ros.engines"):
        first = engine.run_graph(_feeds())
        again = engine.run_graph(_feeds())
        # a new engine in the same process (a parameter set, `da3-ros bag`'s next set): still not rebuilt
        second_engine = create_engine("auto", MODEL, precision="fp32", cache_dir=str(tmp_path))
        second_engine.run_graph(_feeds())
    assert len(runner.builds) == 1, runner.builds  # built once, refused, remembered
    assert exports == [(1, HW, False, "fp32", False)]  # one export: the gate's fp32 graph, reused by the fallback
    assert not list(tmp_path.glob("trt-*.plan"))  # a refused plan is never cached
    # the fallback computes the fp32 graph on ONNX Runtime, not the refused engine's 1.5x depth
    ref = OrtRunner(runner.builds[0], providers=["CPUExecutionProvider"]).run(_feeds())
    for out in (first, again):
        np.testing.assert_array_equal(out["depth"], ref["depth"])
    said = [r.getMessage() for r in caplog.records if "TensorRT refused" in r.getMessage()]
    assert len(said) == 2, said  # once per engine (one per process in the node), not once per set
    assert "EngineParityError" in said[0] and JETPACK6_TRT in said[0] and "ONNX Runtime" in said[0]
    for e in (engine, second_engine):
        assert "on ONNX Runtime (TensorRT refused it: EngineParityError" in e.describe()
        ok, values = e.health()
        assert ok and "correlation" in values["tensorrt_fallback"] and "1-view 42x28" in values["tensorrt_fallback"]


def test_explicit_tensorrt_raises_one_typed_error_with_the_gates_figures_and_never_rebuilds(monkeypatch,
                                                                                            shared_cache):
    runner = install(monkeypatch, depth_scale=1.5)
    engine = create_engine("tensorrt", MODEL, precision="fp32", cache_dir=shared_cache)
    assert not engine.fallback
    errors = []
    for _ in range(3):
        with pytest.raises(trt_engine.TensorRTRefused) as e:
            engine.run_graph(_feeds())
        errors.append(str(e.value))
    assert len(runner.builds) == 1  # the first set built and was refused; the next two were refused at once
    assert len(set(errors)) == 1
    msg = errors[0]
    assert isinstance(e.value, BackendUnavailable)  # one line in the node's log, no traceback
    assert "depth: correlation" in msg and "max relative error 0.5" in msg and "need <= 0.001" in msg
    assert JETPACK6_TRT in msg and "10.14" in msg and "backend auto" in msg and "Not rebuilt" in msg


def test_an_out_of_memory_context_keeps_the_built_plan_and_gates_it_later(monkeypatch, shared_cache):
    runner = install(monkeypatch, depth_scale=1.0, oom=True)
    engine = create_engine("tensorrt", MODEL, precision="fp32", cache_dir=shared_cache, process_res=42)
    for _ in range(2):
        with pytest.raises(trt_engine.TensorRTRefused, match="TensorRTOutOfMemory.*3072 MiB"):
            engine.run_graph(_feeds())
    assert len(runner.builds) == 1
    pending = list(trt_engine.Path(shared_cache).glob("trt-*.plan"))
    assert len(pending) == 1  # the built plan is kept (not yet gated), not thrown away

    # the next process, with memory: the kept plan is loaded and gated, not built again
    runner = install(monkeypatch, depth_scale=1.0, oom=False)
    out = create_engine("tensorrt", MODEL, precision="fp32", cache_dir=shared_cache).run_graph(_feeds())
    assert runner.builds == [] and out["depth"].shape == (1, 1, *HW)
    assert runner.references[0].runner is not None  # the gate ran on it
    plans = list(trt_engine.Path(shared_cache).glob("trt-*.plan"))
    assert len(plans) == 1 and plans != pending  # now cached as gated; the pending copy is gone


def test_the_fp32_reference_session_is_created_only_when_a_plan_is_built(monkeypatch, shared_cache, tmp_path):
    """Issue 23 item 2: a cached plan loads no ONNX Runtime reference (host RAM is GPU memory on a Jetson)."""
    from da3_ros.engines.cache import ArtifactCache

    OnnxSource(MODEL, ArtifactCache(shared_cache)).onnx_for(1, HW, False)  # exported once for the module
    copy_graphs(Path(shared_cache), tmp_path)  # no plan yet: this test's cache is its own
    runner = install(monkeypatch, depth_scale=1.0)  # a good engine: built, gated, cached
    create_engine("tensorrt", MODEL, precision="fp32", cache_dir=str(tmp_path)).run_graph(_feeds())
    assert len(runner.builds) == 1 and runner.references[0].runner is not None  # the build path used it
    runner = install(monkeypatch, depth_scale=1.0)  # the next process: the plan is cached
    engine = create_engine("tensorrt", MODEL, precision="fp32", cache_dir=str(tmp_path))
    engine.run_graph(_feeds())
    engine.prepare(1, HW)
    assert runner.builds == [] and len(runner.references) == 1
    assert isinstance(runner.references[0], trt_engine.LazyReference)
    assert runner.references[0].runner is None  # never loaded


def test_a_fused_attention_graph_given_to_tensorrt_is_refused_at_load_with_the_fix(monkeypatch, shared_cache):
    """Issue 23 item 11: refused when the engine is made (start-up), not by the parser at every set."""
    from da3_ros.engines import EngineConfigError
    from da3_ros.engines.cache import ArtifactCache

    runner = install(monkeypatch)
    fused = OnnxSource(MODEL, ArtifactCache(shared_cache)).onnx_for(1, HW, False, "fp32", fused_attention=True)
    for make in (lambda: create_engine("tensorrt", str(fused), cache_dir=shared_cache),
                 lambda: trt_engine.TensorRTEngine(str(fused), "fp32", shared_cache)):
        with pytest.raises(EngineConfigError) as e:
            make()
        assert "MultiHeadAttention" in str(e.value) and "without --fused-attention" in str(e.value)
        assert str(fused) in str(e.value)
    assert runner.builds == [] and runner.references == []  # nothing was parsed or built
    # backend auto takes ONNX Runtime for it (the only backend that runs it), even where TensorRT runs
    assert create_engine("auto", str(fused), cache_dir=shared_cache).runs_on.backend == "onnxruntime"


def test_a_node_whose_tensorrt_engine_is_refused_falls_back_under_auto_with_one_export(tmp_path, domain_id,
                                                                                     checker):
    """Issue 23 item 1 as a node: `backend: auto`, TensorRT 10.3 "starts" and its engine is refused by the gate.

    The node publishes depth from ONNX Runtime, builds the engine once (not per set), exports one graph, and
    /diagnostics says why it runs on ONNX Runtime.
    """
    import subprocess
    import sys
    from pathlib import Path

    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from da3_ros.ros import conversions as conv
    from ros_harness import ros_env, write_params

    cache = tmp_path / "cache"
    params = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": MODEL, "backend": "auto", "process_res": 42, "camera_names": ["cam"], "engine_cache_dir": str(cache),
        "diagnostics_period_s": 0.3})
    depth = checker.collect(Image, "cam/depth/image")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    pub = checker.node.create_publisher(Image, "cam/image_raw", 5)
    rgb = np.random.default_rng(0).integers(0, 255, (28, 42, 3), np.uint8)
    launcher = Path(__file__).with_name("trt_standin_node.py")
    with open(tmp_path / "node.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(launcher), "1.5", "--ros-args", "--params-file", str(params)],
                                env=ros_env(domain_id), stdout=log, stderr=subprocess.STDOUT)
    try:
        checker.spin_until(lambda: pub.get_subscription_count() > 0, 60, "the node subscribed")

        def frame():
            stamp = conv.ns_to_stamp(checker.node.get_clock().now().nanoseconds)
            return conv.rgb_to_image(rgb, Header(stamp=stamp, frame_id="cam"))

        checker.publish_until(pub, frame, lambda: len(depth) >= 5, 120, "five depth images", period_s=0.3)
        checker.spin_until(lambda: any("tensorrt_fallback" in {kv.key for s in d.status for kv in s.values}
                                       for d in diags), 30, "tensorrt_fallback in /diagnostics")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log = (tmp_path / "node.log").read_text()
    import json

    graphs = [json.loads(p.read_text())["key"] for p in cache.glob("onnx-*.onnx.meta.json")]
    # the engine's fp16 graph (built once, refused) and the gate's fp32 reference, which the fallback runs: no
    # export and no build per set
    assert sorted(g["precision"] for g in graphs) == ["fp16", "fp32"], graphs
    assert all(g["n_views"] == 1 for g in graphs)
    assert not list(cache.rglob("trt-*.plan"))  # the refused plan is not cached
    assert log.count("TensorRT refused") == 1, log  # said once, not per set (and not rebuilt per set)
    assert "Traceback" not in log
