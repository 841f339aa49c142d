"""Lifecycle transitions while the worker is busy (issue 15, item 12): a real managed node over real Fast DDS.

deactivate returns only once the worker has really stopped (a set in flight ends first), or, when the worker
is still inside a set after twice the longest set so far (an export, a TensorRT build), refuses: FAILURE, the
node stays active, the reason is logged. Nothing is torn down under a live worker and a re-activate never
starts a second one.
"""
from __future__ import annotations

import time
from pathlib import Path

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from conftest import EXAMPLES
from da3_ros.msg import MultiViewDepth
from ros_harness import process, write_params

PHOTOS = [f"image:{EXAMPLES / 'SOH_000.png'}", f"image:{EXAMPLES / 'SOH_010.png'}"]


def _workers(log: Path) -> int:
    """Worker threads running in the node now, from its log ("worker started" / "worker stopped")."""
    text = log.read_text()
    return text.count("worker started") - text.count("worker stopped")


class Managed:
    """The lifecycle services of /da3_depth, called from the checker."""

    def __init__(self, checker):
        self.checker = checker
        self.change = checker.node.create_client(ChangeState, "/da3_depth/change_state")
        self.get = checker.node.create_client(GetState, "/da3_depth/get_state")
        checker.spin_until(lambda: self.change.service_is_ready() and self.get.service_is_ready(), 60,
                           "lifecycle services")

    def transition(self, transition_id: int, timeout_s: float = 600) -> tuple[bool, float]:
        """(success, seconds the node took to answer)."""
        req = ChangeState.Request()
        req.transition.id = transition_id
        t0 = time.monotonic()
        future = self.change.call_async(req)
        self.checker.spin_until(future.done, timeout_s, f"transition {transition_id}")
        return future.result().success, time.monotonic() - t0

    def state(self) -> str:
        future = self.get.call_async(GetState.Request())
        self.checker.spin_until(future.done, 30, "get_state")
        return future.result().current_state.label


def _up(tmp_path, domain_id, checker, params: dict, cams: list[str], sources: list[str]):
    node = write_params(tmp_path / "node.yaml", "da3_depth", {"model": "random:da3-small@0", "camera_names": cams,
                                                              **params})
    player = write_params(tmp_path / "player.yaml", "rig_player", {"camera_names": cams, "sources": sources,
                                                                   "rate_hz": 4.0})
    return (process("depth_lifecycle_node", node, domain_id, tmp_path / "node.log"),
            process("rig_player", player, domain_id, tmp_path / "player.log"))


def test_deactivate_waits_for_the_set_in_flight_and_reactivate_runs_one_worker(tmp_path, domain_id, checker):
    """3 cameras on da3-base at 280 (about a second a forward): deactivate as one starts, answered once it ended."""
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    node_cm, player_cm = _up(tmp_path, domain_id, checker, {"model": "random:da3-base@0", "backend": "torch",
                                                            "process_res": 280},
                             ["a", "b", "c"], [PHOTOS[0], PHOTOS[1], PHOTOS[0]])
    log = tmp_path / "node.log"
    with node_cm, player_cm:
        managed = Managed(checker)
        assert managed.transition(Transition.TRANSITION_CONFIGURE)[0]
        assert managed.transition(Transition.TRANSITION_ACTIVATE)[0]
        checker.spin_until(lambda: len(mv) >= 2, 600, "two results")
        assert _workers(log) == 1
        t_last = time.monotonic()
        checker.spin_until(lambda: len(mv) >= 3, 300, "a third result")  # the next forward starts now
        forward_s = time.monotonic() - t_last
        ok, took_s = managed.transition(Transition.TRANSITION_DEACTIVATE)
        assert ok and managed.state() == "inactive"
        assert _workers(log) == 0  # it answered after the worker had really stopped
        n = len(mv)
        checker.spin_for(forward_s)  # a forward's time: a worker left running would publish in it
        assert len(mv) == n
        assert managed.transition(Transition.TRANSITION_ACTIVATE)[0]
        checker.spin_until(lambda: len(mv) >= n + 2, 600, "results after re-activate")
        assert _workers(log) == 1
        assert managed.transition(Transition.TRANSITION_DEACTIVATE)[0]
        assert managed.transition(Transition.TRANSITION_CLEANUP)[0] and managed.state() == "unconfigured"
    assert "Traceback" not in log.read_text()


def test_deactivate_during_a_graph_export_is_refused_and_the_node_stays_active(tmp_path, domain_id, checker):
    """Fresh cache on onnxruntime: the first set exports a graph (tens of seconds); deactivate then refuses.

    The same worker goes on (one da3_worker thread), results come once the graph is made, and a later
    deactivate, with the worker between sets, succeeds.
    """
    cache = tmp_path / "cache"
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    node_cm, player_cm = _up(tmp_path, domain_id, checker, {
        "model": "random:da3-base@0", "backend": "onnxruntime", "process_res": 140,
        "engine_cache_dir": str(cache)}, ["a"], [PHOTOS[0]])
    log = tmp_path / "node.log"
    with node_cm, player_cm:
        managed = Managed(checker)
        assert managed.transition(Transition.TRANSITION_CONFIGURE)[0]
        assert managed.transition(Transition.TRANSITION_ACTIVATE)[0]
        checker.spin_until(lambda: list(cache.glob(".export-*")), 300, "the export to start")
        ok, took_s = managed.transition(Transition.TRANSITION_DEACTIVATE)
        exporting = bool(list(cache.glob(".export-*")))
        assert not ok and exporting, (ok, took_s)  # refused while the export was still running
        assert managed.state() == "active" and _workers(log) == 1
        checker.spin_until(lambda: len(mv) >= 2, 600, "results once the graph is made")
        assert _workers(log) == 1  # the same worker, not a second one
        assert managed.transition(Transition.TRANSITION_DEACTIVATE)[0] and managed.state() == "inactive"
        assert _workers(log) == 0
        assert managed.transition(Transition.TRANSITION_ACTIVATE)[0]
        n = len(mv)
        checker.spin_until(lambda: len(mv) > n, 300, "results after re-activate")
        assert _workers(log) == 1
    text = log.read_text()
    assert "deactivate refused: the worker is still inside a set" in text and "Traceback" not in text, text
