"""Graphs prepared ahead of need (issue 23.7): the live node never exports on a set's path after its first set.

Real exports of random da3-small at a 56 px network size on ONNX Runtime (a few seconds each), through the
core processor as the node runs it (``prepare_fallback``): after the first set, every shape its later sets
need — the temporal window's sizes, a silent camera's subset with its own conditioning, the subset's window —
is exported in the background, so a silent-camera set and a window set find their graph in the cache
(``OnnxSource.exports["live"]`` stays where the first set left it). The metric pair asks both its engines.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from da3_ros.core.config import CoreConfig, OutputConfig
from da3_ros.core.processor import CameraFrame, Calibration, FrameSetProcessor, Processed
from da3_ros.core.rig import Rig
from da3_ros.core.static_tf import StaticTfBuffer
from da3_ros.core.temporal.keyframes import KeyframeRule
from da3_ros.core.temporal.tracker import TemporalConfig, TemporalTracker
from da3_ros.engines import create_engine
from da3_ros.engines.fixed_shape import AHEAD, AheadQueue
from da3_ros.engines.metric_pair import MetricPairEngine
from da3_ros.engines.onnx_source import terminate_exports
from conftest import module_dir

MODEL = "random:da3-small@5"
RES = 56  # network size 28 x 56 for the photos (the feature matrix's; at 28 px random weights give NaN depth)
CAMERAS = ["left", "right"]


@pytest.fixture(scope="module")
def cache_dir(request, tmp_path_factory):
    for path in module_dir(request, tmp_path_factory, "ahead_cache"):
        yield str(path)


@pytest.fixture(scope="module")
def images(soh_images):
    return [np.ascontiguousarray(img[:, :1200]) for img in soh_images]


def _engine(cache_dir: str, model: str = MODEL):
    return create_engine("onnxruntime", model, cache_dir=cache_dir, process_res=RES, threads=1)


def _frames(images, t_s: float, present=(0, 1)) -> list[CameraFrame | None]:
    h, w = images[0].shape[:2]
    K = np.array([[500.0, 0, w / 2], [0, 500.0, h / 2], [0, 0, 1]])
    return [CameraFrame(images[i], int(t_s * 1e9), f"{c}_optical_frame", Calibration(K, (h, w))) if i in present
            else None for i, c in enumerate(CAMERAS)]


def _run(core: FrameSetProcessor, images, t_s: float, present=(0, 1)) -> Processed:
    done = core.process(_frames(images, t_s, present))
    assert isinstance(done, Processed), done
    return done


def _drained(timeout_s: float = 300.0) -> None:
    end = time.monotonic() + timeout_s
    while AHEAD.pending() and time.monotonic() < end:
        time.sleep(0.05)
    assert not AHEAD.pending(), f"still preparing after {timeout_s} s: {AHEAD.pending()}"


def test_a_calibrated_rig_prepares_the_plain_graph_its_silent_camera_needs(cache_dir, images):
    """A 2-camera conditioned rig: the 1-view set of a silent camera is plain, and so is the graph made ahead.

    Old code exported the 1-view graph conditioned (as the full set), which no set ever runs: the silent
    camera's first set exported the plain one on its own path.
    """
    engine = _engine(cache_dir)
    right = np.eye(4)
    right[0, 3] = 0.12
    core = FrameSetProcessor(Rig(engine, 0, np.stack([np.eye(4), right])),
                             CoreConfig(CAMERAS, ["", ""], "params", OutputConfig()), StaticTfBuffer(),
                             prepare_fallback=True)
    first = _run(core, images, 0.0)
    assert first.outputs.result.conditioned and engine.source.exports["live"] == 1  # the first set's own graph
    assert core.shapes_ahead([np.eye(3), np.eye(3)], ["l", "r"], True) == [(1, False)]
    _drained()
    for present in ((0,), (1,)):  # each camera silent in turn
        alone = _run(core, images, 0.1 * (1 + present[0]), present)
        assert not alone.outputs.result.conditioned
    assert engine.source.exports == {"live": 1, "ahead": 1}


def test_the_window_sizes_and_a_silent_reference_are_prepared_ahead(cache_dir, images):
    """temporal.keyframes 1: the 3-view window (set 2) and the reference-silent 1-view set export nothing live."""
    engine = _engine(cache_dir)
    tracker = TemporalTracker(TemporalConfig(KeyframeRule(max_keyframes=1)))
    core = FrameSetProcessor(Rig(engine, 0, None, None, tracker), CoreConfig(CAMERAS, ["", ""], "auto", OutputConfig()),
                             StaticTfBuffer(), prepare_fallback=True)
    _run(core, images, 0.0)
    live = engine.source.exports["live"]
    # the window's next size first (set 2 needs it), then the silent cameras' subsets (the reference's: no window)
    assert core.shapes_ahead([None, None], ["l", "r"], False) == [(3, False), (1, False)]
    _drained()
    window = _run(core, images, 0.1)
    assert window.outputs.result.window_views == 3
    assert _run(core, images, 0.2, present=(1,)).cameras == [1]  # the reference silent: 1 view, no window
    assert engine.source.exports["live"] == live


def test_the_metric_pair_prepares_both_engines_graphs(cache_dir):
    """The pair asks its any-view engine (as conditioned as asked) and its metric engine (always plain)."""
    main, metric = _engine(cache_dir), _engine(cache_dir, "random:da3metric-large@0")
    pair = MetricPairEngine(main, metric)
    try:
        pair.prepare_ahead([(4, True)], (28, 56))  # shapes never exported here: both still pending
        assert [(e, s) for e, s in AHEAD.pending()] == [(main, (4, (28, 56), True)), (metric, (4, (28, 56), False))]
    finally:
        _stop_ahead()


def test_the_ahead_queue_runs_one_request_at_a_time_in_order_and_skips_a_pending_shape(cache_dir):
    """The process's one worker: first asked, first made, a request's graphs of one size by one export child.

    A shape already queued is queued once; cancel forgets the queued requests, not the one in progress.
    """
    engine = _engine(cache_dir)
    queue = AheadQueue()
    started = threading.Event()
    calls: list[tuple[list[int], tuple[int, int], bool]] = []

    def graphs_for(views, hw, conditioned, background=False):
        assert background
        started.wait(30)
        calls.append((list(views), hw, conditioned))

    engine._graphs_for = graphs_for  # observe the calls (the export itself: the tests above)
    queue.put(engine, [(5, (14, 28), False), (6, (14, 28), False), (2, (14, 28), True), (7, (14, 28), False)])
    queue.put(engine, [(5, (14, 28), False), (8, (14, 28), False)])  # 5 is queued already
    assert [s[0] for _, s in queue.pending()] == [5, 6, 2, 7, 8]
    queue.cancel(engine)  # the request in progress goes on
    started.set()
    end = time.monotonic() + 30
    while queue.pending() and time.monotonic() < end:
        time.sleep(0.01)
    assert calls == [([5, 6, 7], (14, 28), False), ([2], (14, 28), True)] and not queue.pending()


def _stop_ahead() -> None:
    AHEAD.cancel()
    threads = [t for t in threading.enumerate() if t.name == AheadQueue.THREAD_NAME]
    end = time.monotonic() + 120
    while any(t.is_alive() for t in threads) and time.monotonic() < end:
        terminate_exports()  # the export in progress, if its child has started
        time.sleep(0.1)
    assert not any(t.is_alive() for t in threads)
