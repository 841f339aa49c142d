"""Faults the node meets in the field (README "Faults and what the node does"): real processes, real Fast DDS."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from conftest import EXAMPLES, REPO
from da3_ros.ros import conversions as conv
from da3_ros.core.geometry import pinhole_K
from da3_ros.msg import MultiViewDepth
from ros_harness import diag_values, process, ros_env, write_params


def _latest(diags) -> dict:
    return diag_values(diags[-1]) if diags else {}


def _start_failure(tmp_path, domain_id, exe: str, params: dict) -> str:
    """Start ``exe`` with parameters it cannot start with; it must exit 1. Returns its output."""
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", params)
    log = tmp_path / f"{exe}.log"
    with process(exe, node_yaml, domain_id, log) as proc:
        assert proc.wait(timeout=60) == 1
    return log.read_text()


def test_no_deprecated_warn_calls():
    """No ``.warn(`` in the package: rclpy's deprecated wrapper makes every one of them ONE call site.

    A throttled ``.warn`` after an unthrottled one then raises ``ValueError`` (logging filters changed) in a set.
    """
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in sorted((REPO / "da3_ros").rglob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\.warn\(", line)]
    assert not offenders, f"use .warning(...): {offenders}"


def test_start_up_user_errors_are_one_line(tmp_path, domain_id):
    """Bad parameters: one clear line, exit 1, no second traceback from destroying the half-built node."""
    bad_declare = {"model": "random:da3-small@0", "camera_names": ["a", "a"]}
    bad_configure = {"model": "random:da3-nonexistent", "camera_names": ["a"]}
    for exe, params, says in [("depth_node", bad_declare, "camera_names must be unique"),
                              ("depth_lifecycle_node", bad_declare, "camera_names must be unique"),
                              ("depth_node", bad_configure, "da3-nonexistent")]:
        out = _start_failure(tmp_path, domain_id, exe, params)
        lines = [line for line in out.splitlines() if "cannot start" in line]
        assert len(lines) == 1 and says in lines[0], (exe, out)
        assert "Traceback" not in out and "AttributeError" not in out, (exe, out)


def test_unexpected_start_up_errors_keep_their_traceback(domain_id):
    """A bug (not a typed user error) at start-up keeps its traceback; a half-built node is not destroyed twice."""
    code = ("from rclpy.node import Node\n"
            "from da3_ros.ros.ros_main import run\n"
            "class Broken(Node):\n"
            "    def __init__(self):\n"
            "        super().__init__('broken')\n"
            "        {}['missing_key']\n"
            "raise SystemExit(run(Broken, None, 'broken'))\n")
    out = subprocess.run([sys.executable, "-c", code], env=ros_env(domain_id), capture_output=True, text=True,
                         cwd="/", timeout=60)  # cwd: the installed package, not the source tree
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" in text and "KeyError: 'missing_key'" in text and "cannot start" in text, text


def test_camera_info_of_another_size_does_not_stop_output(tmp_path, domain_id, checker):
    """A camera_info whose size differs from its images: its K is ignored (said once); depth keeps coming."""
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth",
                             {"model": "random:da3-small@0", "camera_names": ["cam"], "diagnostics_period_s": 0.3,
                              "process_res": 140})  # any size: the point is camera_info's
    depth = checker.collect(Image, "cam/depth/image")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    pub_img = checker.node.create_publisher(Image, "cam/image_raw", 5)
    pub_info = checker.node.create_publisher(CameraInfo, "cam/camera_info", 5)
    rgb = np.zeros((120, 160, 3), np.uint8)

    def publish_pair():
        header = Header(stamp=conv.ns_to_stamp(checker.node.get_clock().now().nanoseconds), frame_id="cam")
        pub_info.publish(conv.make_camera_info(pinhole_K(320, 240, 60.0), (240, 320), header))  # 2x the image
        return conv.rgb_to_image(rgb, header)

    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"):
        checker.spin_until(lambda: pub_img.get_subscription_count() > 0, 60, "node subscribed")
        checker.publish_until(pub_img, publish_pair, lambda: len(depth) >= 3, 60, "three depth images")
        checker.spin_until(lambda: _latest(diags).get("sets_done", 0) >= 3, 10, "diagnostics of three sets")
        status = _latest(diags)
    log = (tmp_path / "node.log").read_text()
    assert status["errors"] == 0, log
    assert log.count("camera_info is (240, 320), image 120x160") == 1, log  # said once, not per set
    assert "logging filters" not in log


def test_player_ends_ctrl_c_without_a_traceback(tmp_path, domain_id, checker):
    """Ctrl-C while a tick is publishing: the context is gone under it; the player still exits 0, quietly."""
    sources = [f"video:{EXAMPLES / 'robot_unitree.mp4'}", f"image:{EXAMPLES / 'SOH_000.png'}",
               f"image:{EXAMPLES / 'SOH_010.png'}"]
    player_yaml = write_params(tmp_path / "player.yaml", "rig_player",
                               {"camera_names": ["front", "left", "right"], "sources": sources, "rate_hz": 30.0})
    got = [checker.collect(Image, f"{c}/image_raw", qos_profile_sensor_data) for c in ("front", "left", "right")]
    for k in range(3):  # a race: lost in about half of the tries by hand (scripted Ctrl-C), rarer here
        log = tmp_path / f"player{k}.log"
        with process("rig_player", player_yaml, domain_id, log) as proc:
            want = len(got[0]) + 10
            checker.spin_until(lambda w=want: len(got[0]) >= w, 30, "the player publishing")
            proc.send_signal(signal.SIGINT)
            checker.spin_until(lambda: proc.poll() is not None, 20, "the player to exit")
        text = log.read_text()
        assert proc.returncode == 0 and "Traceback" not in text, text


def test_camera_info_of_another_size_with_pose_conditioning_is_bad_input(tmp_path, domain_id, checker):
    """Conditioning needs that K: the set is bad input, with the reason (not an error from the logger).

    Two calibrated cameras (a lone camera is never conditioned); `cam`'s camera_info is of another size. A
    corrected camera_info brings depth back.
    """
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "camera_names": ["cam", "other"], "sync.mode": "exact",
        "diagnostics_period_s": 0.3, "process_res": 140,
        "cameras": {"cam": {"T_ref_cam": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]},
                    "other": {"T_ref_cam": [0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]}}})
    depth = checker.collect(Image, "cam/depth/image")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    pub_img = {c: checker.node.create_publisher(Image, f"{c}/image_raw", 5) for c in ("cam", "other")}
    pub_info = {c: checker.node.create_publisher(CameraInfo, f"{c}/camera_info", 5) for c in ("cam", "other")}
    rgb = np.zeros((120, 160, 3), np.uint8)
    info_hw = [(240, 320)]

    def publish_pair():
        stamp = conv.ns_to_stamp(checker.node.get_clock().now().nanoseconds)
        for c in ("cam", "other"):
            header = Header(stamp=stamp, frame_id=c)
            h, w = info_hw[0] if c == "cam" else (120, 160)
            pub_info[c].publish(conv.make_camera_info(pinhole_K(w, h, 60.0), (h, w), header))
            if c == "other":
                pub_img[c].publish(conv.rgb_to_image(rgb, header))
        return conv.rgb_to_image(rgb, Header(stamp=stamp, frame_id="cam"))

    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"):
        checker.spin_until(lambda: all(p.get_subscription_count() > 0 for p in pub_img.values()), 60,
                           "node subscribed")
        checker.publish_until(pub_img["cam"], publish_pair, lambda: _latest(diags).get("bad_input", 0) >= 2, 60,
                              "bad input counted")
        assert not depth and _latest(diags)["errors"] == 0
        info_hw[0] = (120, 160)  # the camera_info fixed: conditioned sets again
        checker.publish_until(pub_img["cam"], publish_pair, lambda: len(depth) >= 1, 60, "depth after the fix")
    log = (tmp_path / "node.log").read_text()
    assert "pose conditioning needs the K of ['cam']" in log and "logging filters" not in log, log


def test_a_callback_cut_short_by_shutdown_is_a_quiet_exit(domain_id):
    """The Ctrl-C race made certain: a timer shuts the context down, then publishes.

    As a tick does when Ctrl-C lands mid-publish: ``publisher's context is invalid`` must end the process with 0,
    not a traceback.
    """
    code = ("from rclpy.node import Node\n"
            "from std_msgs.msg import Header\n"
            "from da3_ros.ros.ros_main import run\n"
            "class Ticker(Node):\n"
            "    def __init__(self):\n"
            "        super().__init__('ticker')\n"
            "        self.pub = self.create_publisher(Header, 'tick', 1)\n"
            "        self.create_timer(0.05, self.tick)\n"
            "    def tick(self):\n"
            "        self.context.shutdown()\n"
            "        self.pub.publish(Header())\n"
            "raise SystemExit(run(Ticker, None, 'ticker'))\n")
    out = subprocess.run([sys.executable, "-c", code], env=ros_env(domain_id), capture_output=True, text=True,
                         cwd="/", timeout=60)  # cwd: the installed package, not the source tree
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "Traceback" not in text, text


# A camera that goes silent

PHOTOS = [f"image:{EXAMPLES / 'SOH_000.png'}", f"image:{EXAMPLES / 'SOH_010.png'}"]
VIDEO = f"video:{EXAMPLES / 'robot_unitree.mp4'}"


def _values(diags) -> dict[str, str]:
    return {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}


def _stamp_s(header) -> float:
    return header.stamp.sec + 1e-9 * header.stamp.nanosec


def test_a_silent_camera_does_not_stop_the_rig_and_is_taken_back(tmp_path, domain_id, checker):
    """3 cameras; `front` stops, then comes back.

    While it is silent, sets go on with left+right (a 2-view forward) and /diagnostics names it; back, 3-view
    sets again. Every published set's stamps lie within the slop (no stale frame).
    """
    slop_s = 0.3
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140,
        "camera_names": ["left", "right", "front"], "sync.slop_s": slop_s, "sync.camera_timeout_s": 1.5,
        "diagnostics_period_s": 0.5})
    stereo = write_params(tmp_path / "stereo.yaml", "rig_player", {
        "camera_names": ["left", "right"], "sources": PHOTOS, "rate_hz": 2.0})
    front = {"camera_names": ["front"], "sources": [VIDEO], "rate_hz": 2.0}
    front1 = write_params(tmp_path / "front1.yaml", "front_player", {**front, "max_frames": 8})
    front2 = write_params(tmp_path / "front2.yaml", "front_player2", front)
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")

    def views(m) -> list[str]:
        return [v.camera_name for v in m.views]

    with process("depth_node", node, domain_id, tmp_path / "node.log"), \
            process("rig_player", stereo, domain_id, tmp_path / "stereo.log"):
        # front's 8 frames (4 s) only once the node listens: started beside a node still loading on a busy
        # machine, the player sent them all to nobody (a CI run with three workers timed out here)
        checker.spin_until(lambda: checker.node.count_subscribers("/front/image_raw") > 0, 120, "node subscribed")
        with process("rig_player", front1, domain_id, tmp_path / "front1.log", ["-r", "__node:=front_player"]):
            checker.spin_until(lambda: any(len(m.views) == 3 for m in mv), 120, "a 3-camera set")
            checker.spin_until(lambda: len(mv[-1].views) == 2 and _values(diags).get("silent_cameras") == "front",
                               60, "sets without the silent camera")
            assert views(mv[-1]) == ["left", "right"] and diags[-1].status[0].level == DiagnosticStatus.WARN
            n_before = len(mv)
            with process("rig_player", front2, domain_id, tmp_path / "front2.log", ["-r", "__node:=front_player2"]):
                checker.spin_until(lambda: any(len(m.views) == 3 for m in mv[n_before:]), 60, "front taken back")
                checker.spin_until(lambda: _values(diags).get("silent_cameras") == "", 30, "no silent camera")
    for m in mv:
        stamps = [_stamp_s(v.depth.header) for v in m.views]
        assert max(stamps) - min(stamps) <= slop_s + 1e-9
        assert m.reference_camera == "left" and views(m)[0] == "left"
    assert int(float(_values(diags)["partial_sets"])) >= 1 and _values(diags)["errors"] == "0"
    assert "Traceback" not in (tmp_path / "node.log").read_text()


def test_a_camera_back_from_silence_in_a_burst_is_processed_with_its_partner(tmp_path, domain_id, checker):
    """Issue 28 over DDS: `cam_b` silent past the timeout while `cam_a` sends, then 30 whole sets in 0.5 s.

    Every set the node processes from the burst on has both cameras (on the old synchroniser the first frames of
    the burst went out as 1-view sets while the partner's frame of the same stamp was milliseconds behind).
    """
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 56,
        "camera_names": ["cam_a", "cam_b"], "sync.camera_timeout_s": 1.0, "diagnostics_period_s": 0.3})
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    pubs = {c: checker.node.create_publisher(Image, f"{c}/image_raw", qos_profile_sensor_data)
            for c in ("cam_a", "cam_b")}
    rgb = {c: np.random.default_rng(k).integers(0, 255, (48, 64, 3), np.uint8) for k, c in enumerate(pubs)}

    def publish(cams) -> int:
        stamp_ns = checker.node.get_clock().now().nanoseconds
        for c in cams:
            pubs[c].publish(conv.rgb_to_image(rgb[c], Header(stamp=conv.ns_to_stamp(stamp_ns), frame_id=c)))
        return stamp_ns

    with process("depth_node", node, domain_id, tmp_path / "node.log"):
        checker.spin_until(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 60, "subscribed")
        end = time.monotonic() + 120
        while not any(len(m.views) == 2 for m in mv):
            assert time.monotonic() < end, "no 2-camera set"
            publish(("cam_a", "cam_b"))
            checker.spin_for(0.2)
        end = time.monotonic() + 60  # cam_b silent, cam_a at ~6 Hz: 1-view sets, cam_b named silent
        while not (mv and len(mv[-1].views) == 1 and _values(diags).get("silent_cameras") == "cam_b"):
            assert time.monotonic() < end, "no 1-view set while cam_b is silent"
            publish(("cam_a",))
            checker.spin_for(0.16)
        burst_start_ns = publish(("cam_a",))
        checker.spin_for(0.1)
        last_ns = 0
        for k in range(30):  # 30 whole sets in 0.5 s, both images of each set with one stamp
            last_ns = publish(("cam_a", "cam_b") if k % 2 == 0 else ("cam_b", "cam_a"))
            checker.spin_for(0.016)
        checker.spin_until(lambda: any(conv.stamp_to_ns(m.header.stamp) == last_ns for m in mv), 60,
                           "the burst's last set processed")
    burst = [m for m in mv if conv.stamp_to_ns(m.header.stamp) > burst_start_ns]
    assert burst and [[v.camera_name for v in m.views] for m in burst] == [["cam_a", "cam_b"]] * len(burst)
    assert "Traceback" not in (tmp_path / "node.log").read_text()


def test_sigterm_releases_everything_like_sigint(tmp_path, domain_id, checker):
    """A service manager's SIGTERM ends the node as Ctrl-C does: exit 0, no traceback, shared memory released."""
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["left", "right"]})
    stereo = write_params(tmp_path / "stereo.yaml", "rig_player", {
        "camera_names": ["left", "right"], "sources": PHOTOS, "rate_hz": 2.0})
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    with process("depth_node", node, domain_id, tmp_path / "node.log") as proc, \
            process("rig_player", stereo, domain_id, tmp_path / "stereo.log"):
        checker.spin_until(lambda: len(mv) >= 1, 120, "a result")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert "Traceback" not in (tmp_path / "node.log").read_text()


def test_out_of_memory_is_a_counted_error_and_the_node_recovers(tmp_path, domain_id, checker):
    """Out of memory in the forward: a counted error said as such; the node stays up and recovers.

    The node's address space is capped just above its size, so the next forward cannot allocate; with the cap
    lifted, results come again.
    """
    import resource

    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "camera_names": ["a", "b", "c"],
        "diagnostics_period_s": 0.5})
    player = write_params(tmp_path / "player.yaml", "rig_player", {
        "camera_names": ["a", "b", "c"], "sources": [PHOTOS[0]] * 3, "rate_hz": 2.0})
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    with process("depth_node", node, domain_id, tmp_path / "node.log") as proc, \
            process("rig_player", player, domain_id, tmp_path / "player.log"):
        checker.spin_until(lambda: len(mv) >= 1, 120, "a first result")
        status = Path(f"/proc/{proc.pid}/status").read_text()
        vm_bytes = int(next(line for line in status.splitlines() if line.startswith("VmSize")).split()[1]) * 1024
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (vm_bytes + 50 * 2**20, resource.RLIM_INFINITY))
        checker.spin_until(lambda: _latest(diags).get("errors", 0) >= 2, 60, "counted out-of-memory sets")
        assert proc.poll() is None
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        n = len(mv)
        checker.spin_until(lambda: len(mv) > n, 60, "results after memory is back")
    log = (tmp_path / "node.log").read_text()
    assert "out of memory in this set" in log and "lower process_res" in log and "Traceback" not in log


class _StereoFeed:
    """`left` and `right` images (the photos, quarter size) published by the checker with stamps it counts."""

    def __init__(self, checker, soh_images, t0_s: float, period_s: float):
        self.checker, self.t_s, self.period_s = checker, t0_s, period_s
        self.small = [np.ascontiguousarray(rgb[::4, ::4]) for rgb in soh_images]
        self.pubs = [checker.node.create_publisher(Image, f"{c}/image_raw", qos_profile_sensor_data)
                     for c in ("left", "right")]

    def subscribed(self) -> bool:
        return all(p.get_subscription_count() for p in self.pubs)

    def send(self, cameras, gap_s: float = 0.0) -> None:
        """One trigger of ``cameras`` (indices), ``gap_s`` of spinning after each camera's frame."""
        self.t_s += self.period_s
        for i in cameras:
            frame = ("left", "right")[i]
            header = Header(stamp=conv.ns_to_stamp(int(self.t_s * 1e9)), frame_id=f"{frame}_optical_frame")
            self.pubs[i].publish(conv.rgb_to_image(self.small[i], header))
            if gap_s:
                self.checker.spin_for(gap_s)


def test_a_paused_rig_resumes_with_whole_sets_never_one_camera_alone(tmp_path, domain_id, checker, soh_images):
    """Issue 15, item 1: a paused rig resumes with whole sets.

    Every camera quiet (a paused bag or simulator) for 4x sync.camera_timeout_s, then back with the first
    camera a few ms ahead of its partner: only 2-view sets, no partial set, no silent camera in /diagnostics.
    """
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["left", "right"],
        "sync.mode": "exact", "sync.camera_timeout_s": 0.5, "diagnostics_period_s": 0.25})
    feed = _StereoFeed(checker, soh_images, 1000.0, 0.2)
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")

    with process("depth_node", node, domain_id, tmp_path / "node.log") as proc:
        checker.spin_until(feed.subscribed, 60, "the node's subscriptions")
        while len(mv) < 2:
            feed.send((0, 1))
            checker.spin_for(0.2)
            assert proc.poll() is None
        for _ in range(3):  # pause 2 s (4 timeouts), resume left first, right 30 ms later, for 1 s
            checker.spin_for(2.0)
            n_before = len(mv)
            for _ in range(5):
                feed.send((0, 1), gap_s=0.03)
                checker.spin_for(0.17)
            checker.spin_until(lambda n=n_before: len(mv) > n, 60, "a set after the pause")
        checker.spin_for(1.0)
    assert all(len(m.views) == 2 for m in mv), [len(m.views) for m in mv]
    assert all(_values([d]).get("silent_cameras") == "" for d in diags)
    assert _values(diags)["partial_sets"] == "0"


def test_a_silent_reference_camera_keeps_the_tf_tree_and_says_so(tmp_path, domain_id, checker, soh_images):
    """Issue 15, item 2 over DDS: `left` (the reference) stops while `right` goes on.

    Right's sets go on alone (depth published), with no TF, no points_fused and no pose in multiview_depth;
    /diagnostics says the reference camera is silent (WARN). Left back: whole sets, TF parented to left again.
    Never a TF parent other than the reference camera's frame.
    """
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["left", "right"],
        "sync.mode": "exact", "sync.camera_timeout_s": 0.6, "diagnostics_period_s": 0.25})
    feed = _StereoFeed(checker, soh_images, 2000.0, 0.1)
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    fused = checker.collect(PointCloud2, "points_fused")
    tf = checker.collect(TFMessage, "/tf", 100)
    diags = checker.collect(DiagnosticArray, "/diagnostics")

    def until(condition, cameras, what: str) -> None:
        for _ in range(600):
            if condition():
                return
            feed.send(cameras)
            checker.spin_for(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    with process("depth_node", node, domain_id, tmp_path / "node.log") as proc:
        checker.spin_until(feed.subscribed, 60, "the node's subscriptions")
        until(lambda: len(fused) >= 2 and len(mv) >= 2, (0, 1), "whole sets")
        until(lambda: any(len(m.views) == 1 for m in mv), (1,), "right's sets while left is silent")
        until(lambda: sum(len(m.views) == 1 for m in mv) >= 3 and any(
            d.status[0].level == DiagnosticStatus.WARN and "reference camera 'left' silent" in d.status[0].message
            for d in diags), (1,), "the reference named silent")
        n_fused, n_tf = len(fused), len(tf)
        # Each output is its own topic: wait for TF too rather than assume it lands with points_fused.
        until(lambda: len(mv[-1].views) == 2 and len(fused) > n_fused and len(tf) > n_tf, (0, 1),
              "left taken back: whole sets, points_fused and TF again")
        assert proc.poll() is None
    alone = [m for m in mv if len(m.views) == 1]
    assert alone and all(m.reference_camera == "left" and not m.views[0].has_pose for m in alone)
    assert all(c.header.frame_id == "left_optical_frame" for c in fused)
    assert {t.header.frame_id for msg in tf for t in msg.transforms} == {"left_optical_frame"}
    assert int(_values(diags)["reference_silent"]) >= 1
