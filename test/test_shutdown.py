"""Stopping the node whatever it is doing (issue 15, items 9 and 10): real processes, real signals, real DDS.

SIGTERM (``docker stop``, ``kill``, launch's escalation) or SIGINT (Ctrl-C) while a graph is exported or a
forward is in flight: the node exits at once with 0, its export child dies with it, no scratch folder is left
in the cache, and no result of the interrupted set is published.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray

from conftest import EXAMPLES
from da3_ros.msg import MultiViewDepth
from ros_harness import diag_values, process, write_params

PHOTOS = [f"image:{EXAMPLES / 'SOH_000.png'}", f"image:{EXAMPLES / 'SOH_010.png'}"]


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process on the machine."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        found.append((int(d.name), ppid, cmdline))
    return found


def _exports_of(cache: Path) -> list[int]:
    """Export processes writing into ``cache`` (children of the node, or orphans re-parented elsewhere)."""
    return [pid for pid, _, cmd in _processes() if "da3_ros.export.onnx_export" in cmd and str(cache) in cmd]


def _scratch(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob(".export-*")) if cache.is_dir() else []


def _wait(condition, timeout_s: float, what: str, checker=None) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return
        if checker is not None:
            checker.spin_for(0.05)
        else:
            time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _exporting_rig(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A fresh cache, backend onnxruntime (its first set exports a graph), and a stereo player: the files."""
    cache = tmp_path / "cache"
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "onnxruntime", "process_res": 140,
        "engine_cache_dir": str(cache), "camera_names": ["left", "right"]})
    stereo = write_params(tmp_path / "stereo.yaml", "rig_player", {
        "camera_names": ["left", "right"], "sources": PHOTOS, "rate_hz": 2.0})
    return cache, node, stereo


def test_sigterm_during_a_graph_export_ends_the_node_and_the_export(tmp_path, domain_id, checker):
    """Fresh cache, backend onnxruntime: the first set exports its graph in a child process; SIGTERM the node.

    It exits 0 sooner than it took to start (was: the worker joined for 30 s, then launch's SIGKILL), the
    export dies with it and no ``.export-*`` folder is left behind.
    """
    cache, node, stereo = _exporting_rig(tmp_path)
    checker.collect(MultiViewDepth, "multiview_depth")  # a subscriber: the node processes sets
    t_start = time.monotonic()
    with process("depth_node", node, domain_id, tmp_path / "node.log") as proc, \
            process("rig_player", stereo, domain_id, tmp_path / "stereo.log"):
        _wait(lambda: _exports_of(cache), 300, "the export child", checker)
        start_up_s = time.monotonic() - t_start
        (child,) = _exports_of(cache)
        assert (child, proc.pid) in [(pid, ppid) for pid, ppid, _ in _processes()]
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        stop_s = time.monotonic() - t_term
    log = (tmp_path / "node.log").read_text()
    assert rc == 0 and "Traceback" not in log, log
    assert stop_s < start_up_s, (stop_s, start_up_s)
    _wait(lambda: not Path(f"/proc/{child}").exists(), 10, "the export child to end")
    assert not _exports_of(cache) and not _scratch(cache), _scratch(cache)


def test_ctrl_c_with_a_forward_in_flight_stops_well_within_that_forward(tmp_path, domain_id, checker):
    """3 cameras on da3-base: several seconds a forward. SIGINT just after a result, as the next forward starts.

    The node stops in well under one forward (was: it waited for the forward to end) and nothing of the
    interrupted set is published.
    """
    cams = ["a", "b", "c"]
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-base@0", "backend": "torch", "camera_names": cams, "diagnostics_period_s": 0.5})
    player = write_params(tmp_path / "player.yaml", "rig_player", {
        "camera_names": cams, "sources": [PHOTOS[0], PHOTOS[1], PHOTOS[0]], "rate_hz": 4.0})
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    with process("depth_node", node, domain_id, tmp_path / "node.log") as proc, \
            process("rig_player", player, domain_id, tmp_path / "player.log"):
        checker.spin_until(lambda: len(mv) >= 2, 600, "two results")
        checker.spin_until(lambda: diags and diag_values(diags[-1]).get("sets_done", 0) >= 2, 60, "their timings")
        forward_s = diag_values(diags[-1])["forward_ms.p50"] / 1e3
        n = len(mv)
        checker.spin_until(lambda: len(mv) > n, 120, "the next result")  # the next forward starts now
        n_at_signal = len(mv)
        t_int = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
        stop_s = time.monotonic() - t_int
        checker.spin_for(0.5)
    log = (tmp_path / "node.log").read_text()
    assert rc == 0 and "Traceback" not in log, log
    assert stop_s < 0.5 * forward_s, (stop_s, forward_s)
    assert len(mv) == n_at_signal  # the interrupted set was dropped, not published


def test_a_node_killed_outright_takes_its_export_with_it(tmp_path, domain_id, checker):
    """SIGKILL (launch's last resort, the OOM killer): no clean-up runs in the node, yet its export dies too.

    The kernel's parent-death signal ends the child; the next export into that cache sweeps the scratch
    folder it left (once it is old enough not to be one being set up).
    """
    import os

    from da3_ros.engines.onnx_source import STALE_SCRATCH_S, sweep_stale_scratch

    cache, node, stereo = _exporting_rig(tmp_path)
    checker.collect(MultiViewDepth, "multiview_depth")
    with process("depth_node", node, domain_id, tmp_path / "node.log") as proc, \
            process("rig_player", stereo, domain_id, tmp_path / "stereo.log"):
        _wait(lambda: _exports_of(cache), 300, "the export child", checker)
        (child,) = _exports_of(cache)
        proc.kill()
        proc.wait(timeout=30)
    _wait(lambda: not Path(f"/proc/{child}").exists(), 30, "the export child to die with the node")
    left = list(cache.glob(".export-*"))
    assert left  # nothing in the node could clean up
    sweep_stale_scratch(cache)
    assert list(cache.glob(".export-*")) == left  # too young to judge: maybe still being set up
    old = time.time() - 2 * STALE_SCRATCH_S
    for d in left:
        os.utime(d, (old, old))
    sweep_stale_scratch(cache)
    assert not list(cache.glob(".export-*"))


_FINALISER_CTRL_C = """
import os, signal, sys
from rclpy.node import Node
from da3_ros.ros.ros_main import run

class Garbage:
    def __del__(self):  # Ctrl-C arrives while Python runs a finaliser (rclpy's Future.__del__ in the wild)
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(200_000))  # bytecodes after the signal: where a KeyboardInterrupt would be raised

class Victim(Node):
    def __init__(self):
        super().__init__("victim")
        self.create_timer(0.05, self.tick)

    def tick(self):
        Garbage()
        print("ticked", flush=True)

sys.exit(run(Victim, None, "victim"))
"""


def test_ctrl_c_landing_in_a_finaliser_ends_quietly(tmp_path, domain_id):
    """Ctrl-C is a request to stop, never an exception raised wherever Python happens to be.

    A KeyboardInterrupt raised inside a finaliser cannot propagate: Python printed "Exception ignored in ...
    Traceback" (the player did, in rclpy's Future.__del__, in about one Ctrl-C in a hundred). While spinning,
    ``run`` ends on rclpy's own shutdown of the context instead.
    """
    import subprocess
    import sys

    from ros_harness import ros_env

    done = subprocess.run([sys.executable, "-c", _FINALISER_CTRL_C], env=ros_env(domain_id),
                          capture_output=True, text=True, timeout=60)
    text = done.stdout + done.stderr
    assert "ticked" in text, text  # the finaliser ran: the signal was sent from inside it
    assert done.returncode == 0 and "Traceback" not in text and "Exception ignored" not in text, text
