"""The graph cache shared by processes and threads (issue 15, items 13 and 14): real exports, real processes.

A graph renamed into place but not yet sealed is never deleted by a reader; two processes exporting the same
graph at once both get it; the offline commands never export the (N-1)-view fallback graph they never use.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from std_msgs.msg import Header
from conftest import module_dir
from da3_ros.ros import conversions as conv
from da3_ros.engines import create_engine
from da3_ros.engines.cache import ArtifactCache
from da3_ros.engines.onnx_source import OnnxSource, live_exports, terminate_exports
from da3_ros.core.config import OutputConfig
from da3_ros.core.config import CoreConfig
from da3_ros.core.processor import Processed
from da3_ros.ros.pipeline import SetProcessor
from da3_ros.core.rig import Rig
from da3_ros.core.static_tf import StaticTfBuffer

MODEL = "random:da3-small@5"
HW = (84, 112)  # a small network size: the export is mostly the weights

_EXPORTER = """
import sys, time
from pathlib import Path
from da3_ros.engines.cache import ArtifactCache
from da3_ros.engines.onnx_source import OnnxSource

root, mode = sys.argv[1], sys.argv[2]
src = OnnxSource({model!r}, ArtifactCache(root))
shape = (2, {hw!r}, False)
if mode == "when-renamed":  # a second node whose first look at the cache lands between rename and seal
    graph = src.cache.path_for("onnx", src.key(*shape, "fp32"), "onnx")
    while not graph.exists():
        time.sleep(0.0005)
path = src.onnx_for(*shape)
import onnxruntime as ort
ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
print("LOADED", path, flush=True)
"""


def _scratch(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".export-") or p.name.startswith(".onnx-"))


def test_two_processes_exporting_the_same_graph_both_get_it(tmp_path):
    """A exports; B, exporting the same graph, looks at the cache the instant A renames the graph into place.

    Before the per-graph lock, B's check found a graph without its sidecar, deleted it as "unsealed", and A's
    seal then failed on the missing file.
    """
    root = tmp_path / "cache"
    code = _EXPORTER.format(model=MODEL, hw=HW)
    b = subprocess.Popen([sys.executable, "-c", code, str(root), "when-renamed"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd="/")
    a = subprocess.Popen([sys.executable, "-c", code, str(root), "now"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd="/")
    out_a, _ = a.communicate(timeout=900)
    out_b, _ = b.communicate(timeout=900)
    assert a.returncode == 0 and "LOADED" in out_a, out_a[-3000:]
    assert b.returncode == 0 and "LOADED" in out_b, out_b[-3000:]
    graphs = sorted(root.glob("onnx-*.onnx"))
    assert len(graphs) == 1 and ArtifactCache(root).verified(graphs[0])
    assert not _scratch(root), _scratch(root)


def test_threads_of_one_process_share_the_lock(tmp_path):
    """The lock is re-entrant per thread and exclusive between threads (flock alone is per open file)."""
    cache = ArtifactCache(tmp_path)
    path = cache.path_for("onnx", {"k": 1}, "onnx")
    order: list[str] = []
    with cache.lock(path):
        with cache.lock(path):  # re-entrant: the export holds it while it checks, writes and seals
            t = threading.Thread(target=lambda: (cache.lock(path).__enter__(), order.append("other")))
            t.start()
            t.join(timeout=0.5)
            assert t.is_alive() and not order  # the other thread waits
            order.append("first")
    t.join(timeout=30)
    assert order == ["first", "other"]


@pytest.fixture(scope="module")
def onnx_engine(request, tmp_path_factory):
    for root in module_dir(request, tmp_path_factory, "engine_cache"):
        yield create_engine("onnxruntime", MODEL, cache_dir=str(root), process_res=112), root


def _one_set(core: SetProcessor, images) -> Processed:
    msgs = [conv.rgb_to_image(rgb, Header(stamp=conv.ns_to_stamp(10**9), frame_id=f"cam{i}"))
            for i, rgb in enumerate(images)]
    done = core.process(msgs, [None] * len(msgs), [False] * len(msgs))
    assert isinstance(done, Processed), done
    return done


def _fallback_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "da3_prepare_ahead" and t.is_alive()]


def test_the_fallback_graph_is_prepared_only_when_asked(onnx_engine, soh_images):
    """The node asks for the (N-1)-view graph ahead (a camera may go silent); bag and media never need it.

    The background export is a child process: terminate_exports (what the node's exit runs) kills it and
    leaves no scratch folder.
    """
    engine, root = onnx_engine
    images = [np.ascontiguousarray(img[:, :1200]) for img in soh_images]
    cfg = CoreConfig(["a", "b"], ["", ""], "off", OutputConfig())
    _one_set(SetProcessor(Rig(engine), cfg, StaticTfBuffer()), images)  # the offline default
    assert not _fallback_threads() and not live_exports()
    assert len(list(root.glob("onnx-*.onnx"))) == 1  # the 2-view graph only
    _one_set(SetProcessor(Rig(engine), cfg, StaticTfBuffer(), prepare_fallback=True), images)  # the node
    (thread,) = _fallback_threads()
    assert _wait_for(lambda: live_exports(), 120), "the 1-view export never started"
    pids = [p.pid for p in live_exports()]
    terminate_exports()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert not any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in pids)
    assert len(list(root.glob("onnx-*.onnx"))) == 1 and not _scratch(root), os.listdir(root)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def _wait_for(condition, timeout_s: float) -> bool:
    done = threading.Event()
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return True
        done.wait(0.05)
    return bool(condition())


def test_one_export_child_writes_several_graphs_and_each_is_taken_as_it_is_written(tmp_path, caplog):
    """Graphs of one size asked together (a temporal window's sizes) come from ONE export child.

    The child loads the model once; each graph is sealed, and its lock let go, as soon as the child says it is
    written, not at the end.
    """
    import logging

    from da3_ros.engines.onnx_source import WRITTEN_PREFIX, OnnxSource, _run_export, read_metadata

    # the announcement is taken while the child runs: this child writes its second line only once the first was
    # taken (the callback made the file it waits for); a parent that read stdout only at exit would never see it
    flag, taken = tmp_path / "first-taken", []
    child = ("import pathlib, sys, time\n"
             f"print({WRITTEN_PREFIX!r} + 'a', flush=True)\nprint('what a network prints', flush=True)\n"
             f"t = time.monotonic()\nwhile not pathlib.Path({str(flag)!r}).exists() and time.monotonic() - t < 60:\n"
             "    time.sleep(0.01)\n"
             f"print({WRITTEN_PREFIX!r} + 'b', flush=True)\nsys.stderr.write('done')\n")

    def written(name: str) -> None:
        taken.append(name)
        flag.touch()

    assert _run_export([sys.executable, "-c", child], tmp_path, written=written) == (0, "done")
    assert taken == ["a", "b"]

    source = OnnxSource(MODEL, ArtifactCache(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="da3_ros.engines.onnx_source"):
        paths = source.onnx_for_views([2, 1], (28, 28), False)
    exporting = [r for r in caplog.records if r.getMessage().startswith("exporting")]
    assert len(exporting) == 1 and "2/1 views" in exporting[0].getMessage()  # one child for both
    assert [read_metadata(p)["n_views"] for p in paths] == [2, 1] and source.exports["live"] == 2
    assert source.onnx_for_views([1, 2], (28, 28), False) == paths[::-1] and source.exports["live"] == 2


def test_a_graph_still_queued_in_an_export_child_is_exported_by_a_set_that_needs_it_now(tmp_path):
    """Only the graph an export child writes first is locked from the start.

    A set needing a later one exports it itself, at its own priority, rather than wait behind the others in a
    child prepared ahead at a lower one.
    """
    root = tmp_path / "cache"
    ahead, now = OnnxSource(MODEL, ArtifactCache(root)), OnnxSource(MODEL, ArtifactCache(root))
    batch = threading.Thread(target=ahead.onnx_for_views, args=([2, 1], (28, 28), False), kwargs={"background": True})
    batch.start()
    end = time.monotonic() + 120
    while not list(root.glob(".export-*")) and time.monotonic() < end:  # the child is exporting the 2-view graph
        time.sleep(0.01)
    assert list(root.glob(".export-*")), "no export child started"
    path = now.onnx_for(1, (28, 28), False)
    batch.join(600)
    assert now.exports["live"] == 1 and ArtifactCache(root).verified(path)  # it did not wait for the batch
    assert ahead.exports == {"live": 0, "ahead": 1}  # the child's 1-view graph came second: dropped, not sealed
    assert not list(root.glob(".export-*"))
