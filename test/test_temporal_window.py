"""Issue 18 (a), (d), (e): the temporal window on the real network, over DDS and offline.

(a) a window's forward is upstream's forward on the same N + K images in the same order, and ONNX Runtime's
graphs for N + K views chain the same windows; (d) the node with
``temporal.keyframes`` > 0 publishes ``odometry`` and its TF with the sets' stamps, monotonic, one parent per
frame, restarts the chain (said, counted) after a paused stream, a silent reference camera and a lifecycle
re-activation (going on from its last pose), and publishes no odometry with K = 0; (e) ``da3-ros bag`` writes
``/odometry`` and a TUM file evo reads; ``media`` too.
The weights are random (untrained): these tests show the mechanics, exactly, not the quality.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from da3_ros.core.rig import Rig
from da3_ros.core.temporal.chain import read_tum
from da3_ros.core.temporal.keyframes import KeyframeRule
from da3_ros.core.temporal.tracker import TemporalConfig, TemporalTracker
from da3_ros.engines.torch_engine import TorchEngine
from da3_ros.models import load_model
from da3_ros.msg import MultiViewDepth
from da3_ros.ros import conversions as conv
from ros_harness import process, write_params

T0_NS = 1_700_000_000 * 10**9
PERIOD_NS = 100_000_000
EVERY_MOVE = {"temporal.min_translation_rel": 1e-6, "temporal.min_rotation_deg": 1e-6, "temporal.min_interval_s": 0.0}
# random weights give a relative chain: its odometry goes out only with the opt-in (issue 23.6)
RELATIVE_ODOMETRY = {"temporal.publish_relative_odometry": True}


def video_frames(video_path, n: int, step: int = 5, scale: float = 1.0) -> list[np.ndarray]:
    """Every ``step``-th frame of the example video (a walking robot's camera), RGB."""
    cap = cv2.VideoCapture(str(video_path))
    out = []
    try:
        while len(out) < n:
            ok, bgr = cap.read()
            assert ok, f"the example video has fewer than {n * step} frames"
            if int(cap.get(cv2.CAP_PROP_POS_FRAMES) - 1) % step == 0:
                if scale != 1.0:
                    bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                out.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    finally:
        cap.release()
    return out


def stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


# --- (a) parity --------------------------------------------------------------------------------------------
def test_the_window_forward_is_upstreams_forward_on_the_same_views(video_path):
    from test_parity import _upstream_api

    model = load_model("random:da3-small@0")
    rule = KeyframeRule(2, min_translation_rel=1e-6, min_rotation_deg=1e-6, min_interval_ns=0)
    rig = Rig(TorchEngine(model), temporal=TemporalTracker(TemporalConfig(rule)))
    api = _upstream_api(model.variant.name, model.net.state_dict())
    seen: dict[int, np.ndarray] = {}
    sizes = []
    for k, rgb in enumerate(video_frames(video_path, 4)):
        stamp = T0_NS + k * PERIOD_NS
        seen[stamp] = rgb
        result = rig.process([rgb], [None], stamp_ns=stamp)
        step = result.temporal
        assert step is not None and result.window_views == step.layout.n_views
        sizes.append(step.layout.n_views)
        window = [rgb] + [seen[s] for s in step.layout.keyframe_stamps_ns]  # current first, keyframes oldest first
        ref = api.inference(window, process_res=504, ref_view_strategy="first")
        f = step.chain.chain_per_window_unit  # published depth is in the chain's unit: f x the window's
        ours = result.prediction
        ours_err = float(np.abs(ours.depth[0] / f - ref.depth[0]).max())
        assert ours_err <= 1e-5 * max(1.0, float(np.abs(ref.depth[0]).max()))
        np.testing.assert_allclose(ours.confidence[0], ref.conf[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(ours.K_proc[0], ref.intrinsics[0], rtol=1e-5)
        if len(window) > 1:  # the keyframes really joined: the view alone gives other numbers
            alone = api.inference([rgb], process_res=504, ref_view_strategy="first")
            assert np.abs(alone.depth[0] - ref.depth[0]).max() > 10 * max(ours_err, 1e-6)
    # the store fills to K = 2 (an alignment that fails on these random weights empties it: never above K)
    assert sizes[:3] == [1, 2, 3] and max(sizes) == 3



def test_a_fixed_shape_engine_runs_the_same_windows(tmp_path, video_path):
    """ONNX Runtime (graphs per window size N + K, torch-free at run time) chains the same windows as torch."""
    from da3_ros.engines import create_engine

    rule = KeyframeRule(1, min_translation_rel=1e-6, min_rotation_deg=1e-6, min_interval_ns=0)
    rigs = [Rig(create_engine(b, "random:da3-small@0", process_res=140, cache_dir=str(tmp_path)),
                temporal=TemporalTracker(TemporalConfig(rule))) for b in ("torch", "onnxruntime")]
    for k, rgb in enumerate(video_frames(video_path, 4, scale=0.25)):
        torch_out, ort_out = (rig.process([rgb], [None], stamp_ns=T0_NS + k * PERIOD_NS) for rig in rigs)
        assert ort_out.window_views == torch_out.window_views == min(k + 1, 2)  # K = 1 joins from the 2nd set
        a, b = ort_out.prediction, torch_out.prediction
        scale = float(np.abs(b.depth).max())
        assert float(np.abs(a.depth - b.depth).max()) < 1e-3 * scale
        assert float(np.abs(a.confidence - b.confidence).max()) < 1e-3 * float(np.abs(b.confidence).max())
        ta, tb = ort_out.temporal.chain, torch_out.temporal.chain
        assert ta.chain_id == tb.chain_id and (ta.restart is None) == (tb.restart is None)
        np.testing.assert_allclose(ta.T_chain_cam[:3, 3], tb.T_chain_cam[:3, 3], atol=1e-3 * scale)
        np.testing.assert_allclose(ta.T_chain_cam[:3, :3], tb.T_chain_cam[:3, :3], atol=1e-3)


# --- (d) over DDS ------------------------------------------------------------------------------------------
class _RigFeed:
    """Two cameras of the video (left = frame t, right = frame t + 1) published by the checker, stamps by hand."""

    def __init__(self, checker, frames: list[np.ndarray]):
        self.checker, self.frames = checker, frames
        self.pubs = [checker.node.create_publisher(Image, f"{c}/image_raw", 10) for c in ("left", "right")]
        self.k = 0
        self.t_ns = T0_NS

    def subscribed(self) -> bool:
        return all(p.get_subscription_count() for p in self.pubs)

    def send(self, cameras=(0, 1), jump_ns: int = 0) -> None:
        self.t_ns += PERIOD_NS + jump_ns
        self.k += 1
        for i in cameras:
            rgb = self.frames[(self.k + i) % len(self.frames)]
            header = Header(stamp=conv.ns_to_stamp(self.t_ns), frame_id=("left", "right")[i] + "_optical_frame")
            self.pubs[i].publish(conv.rgb_to_image(rgb, header))


def _diag(diags) -> dict[str, str]:
    return {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}


def test_the_node_publishes_odometry_and_restarts_its_chain_cleanly(tmp_path, domain_id, checker, video_path):
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["left", "right"],
        "sync.mode": "exact", "sync.camera_timeout_s": 0.6, "diagnostics_period_s": 0.25,
        "temporal.keyframes": 2, "temporal.max_gap_s": 2.5, **EVERY_MOVE, **RELATIVE_ODOMETRY})
    feed = _RigFeed(checker, video_frames(video_path, 12, scale=0.25))
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    odom = checker.collect(Odometry, "odometry")
    tf = checker.collect(TFMessage, "/tf", 100)
    diags = checker.collect(DiagnosticArray, "/diagnostics")

    def until(condition, what: str, cameras=(0, 1), jump_ns: int = 0) -> None:
        for _ in range(600):
            if condition():
                return
            feed.send(cameras, jump_ns)
            jump_ns = 0
            checker.spin_for(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    with process("depth_node", node, domain_id, tmp_path / "node.log") as proc:
        checker.spin_until(feed.subscribed, 60, "the node's subscriptions")
        until(lambda: len(odom) >= 4 and any(m.window_views == 4 for m in mv), "windows of 2 cameras + 2 keyframes")
        # a paused stream: the next set comes 10 s of stamps later
        until(lambda: any(m.chain_restart == "stream_paused" for m in mv), "the chain restarted after the pause",
              jump_ns=10 * 10**9)
        until(lambda: any(len(m.views) == 1 for m in mv), "right's sets while left is silent", cameras=(1,))
        until(lambda: any(m.chain_restart == "reference_silent" for m in mv), "the chain restarted after left's "
              "silence")
        until(lambda: "temporal_resets.reference_silent" in _diag(diags), "the restarts in /diagnostics")
        assert proc.poll() is None
    with_ref = [m for m in mv if len(m.views) == 2]
    odom_stamps = [stamp_ns(o.header) for o in odom]
    assert odom_stamps == sorted(set(odom_stamps))  # monotonic, one per set
    assert set(odom_stamps) <= {stamp_ns(m.header) for m in with_ref}  # the set's stamps; none while left silent
    assert {stamp_ns(m.header) for m in mv if len(m.views) == 1}.isdisjoint(odom_stamps)
    assert {(o.header.frame_id, o.child_frame_id) for o in odom} == {("odom_da3", "left_optical_frame_da3")}
    parents: dict[str, set[str]] = {}
    for msg in tf:
        for t in msg.transforms:
            parents.setdefault(t.child_frame_id, set()).add(t.header.frame_id)
    assert all(len(p) == 1 for p in parents.values()), parents  # one parent per frame, ever
    assert parents["left_optical_frame_da3"] == {"odom_da3"} and parents["right_optical_frame_da3"] == {
        "left_optical_frame"}
    odom_tf = [stamp_ns(t.header) for msg in tf for t in msg.transforms if t.header.frame_id == "odom_da3"]
    assert odom_tf == odom_stamps[-len(odom_tf):] and len(odom_tf) >= len(odom_stamps) - 2  # TF with the stamps
    ids = [m.chain_id for m in with_ref]
    assert ids == sorted(ids) and ids[-1] - ids[0] >= 2  # the two restarts
    values = _diag(diags)
    assert int(values["temporal_resets.stream_paused"]) >= 1 and int(values["temporal_resets.reference_silent"]) >= 1
    assert all(np.all(np.diag(np.reshape(o.pose.covariance, (6, 6))) > 0) for o in odom)


def test_sets_superseded_while_the_worker_is_busy_are_no_gap(tmp_path, domain_id, checker, video_path):
    """A forward longer than temporal.max_gap_s: the sets the worker had no time for were seen, not silence.

    Stamps 100 ms apart, sent every 40 ms; processed sets come two or more stamps apart (more than max_gap_s
    0.15 s), the ones between superseded. No stream_paused restart (before: nearly every set restarted the chain).
    The loop waits for such a gap, not for load luck: a fast machine may skip only one stamp (the CI run on
    3485183 saw 200 ms at most, under the 250 ms this test once asked for).
    """
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["left", "right"],
        "sync.mode": "exact", "diagnostics_period_s": 0.25, "temporal.keyframes": 2, "temporal.max_gap_s": 0.15,
        **EVERY_MOVE})
    feed = _RigFeed(checker, video_frames(video_path, 8, scale=0.25))
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")

    def max_gap_ns() -> int:
        stamps = [stamp_ns(m.header) for m in mv]
        return max((b - a for a, b in zip(stamps, stamps[1:])), default=0)

    with process("depth_node", node, domain_id, tmp_path / "node.log") as proc:
        checker.spin_until(feed.subscribed, 60, "the node's subscriptions")
        for _ in range(1500):
            if sum(m.window_views == 4 for m in mv) >= 4 and int(_diag(diags).get("sets_superseded", "0")) > 0 \
                    and max_gap_ns() > 150_000_000:
                break
            feed.send()
            checker.spin_for(0.04)
        assert proc.poll() is None
    assert sum(m.window_views == 4 for m in mv) >= 4, [m.window_views for m in mv]
    assert max_gap_ns() > 150_000_000  # a gap the old rule restarted on
    restarts = [m.chain_restart for m in mv]
    assert "stream_paused" not in restarts, restarts  # (random weights may fail an alignment: not this test's)
    assert "temporal_resets.stream_paused" not in _diag(diags)


def test_without_keyframes_there_is_no_odometry(tmp_path, domain_id, checker, video_path):
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["left", "right"],
        "sync.mode": "exact"})
    feed = _RigFeed(checker, video_frames(video_path, 4, scale=0.25))
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    odom = checker.collect(Odometry, "odometry")
    tf = checker.collect(TFMessage, "/tf", 100)
    with process("depth_node", node, domain_id, tmp_path / "node.log"):
        checker.spin_until(feed.subscribed, 60, "the node's subscriptions")
        for _ in range(600):
            if len(mv) >= 3:
                break
            feed.send()
            checker.spin_for(0.1)
        checker.spin_for(0.5)
    assert len(mv) >= 3
    assert not odom and all(m.window_views == 2 and m.keyframes == 0 and np.isnan(m.scale_drift) for m in mv)
    assert all(t.header.frame_id != "odom_da3" for msg in tf for t in msg.transforms)


def test_a_reactivated_lifecycle_node_restarts_its_chain_where_it_stopped(tmp_path, domain_id, checker, video_path):
    """Deactivate, activate: the chain restarts where it stopped.

    The keyframes from before are forgotten (the robot may have moved meanwhile), the restart is said
    ("reactivated") and counted, and the odometry goes on from its last pose.
    """
    from lifecycle_msgs.msg import Transition
    from test_lifecycle import Managed

    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["left", "right"],
        "sync.mode": "exact", "diagnostics_period_s": 0.25, "temporal.keyframes": 2, **EVERY_MOVE,
        **RELATIVE_ODOMETRY})
    feed = _RigFeed(checker, video_frames(video_path, 8, scale=0.25))
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    odom = checker.collect(Odometry, "odometry")
    diags = checker.collect(DiagnosticArray, "/diagnostics")

    def until(condition, what: str) -> None:
        for _ in range(600):
            if condition():
                return
            feed.send()
            checker.spin_for(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    with process("depth_lifecycle_node", node, domain_id, tmp_path / "node.log") as proc:
        managed = Managed(checker)
        assert managed.transition(Transition.TRANSITION_CONFIGURE)[0]
        assert managed.transition(Transition.TRANSITION_ACTIVATE)[0]
        checker.spin_until(feed.subscribed, 60, "the node's subscriptions")
        until(lambda: any(m.window_views == 4 for m in mv) and len(odom) >= 3, "full windows")
        assert managed.transition(Transition.TRANSITION_DEACTIVATE)[0]
        checker.spin_for(0.5)  # anything still in flight arrives now
        before_mv, before_odom = len(mv), len(odom)
        assert managed.transition(Transition.TRANSITION_ACTIVATE)[0]
        until(lambda: len(odom) > before_odom and "temporal_resets.reactivated" in _diag(diags),
              "odometry after re-activation")
        assert proc.poll() is None
    first_after = mv[before_mv]
    assert first_after.chain_restart == "reactivated" and first_after.window_views == 2  # no keyframe kept
    assert first_after.chain_id > mv[before_mv - 1].chain_id
    assert int(_diag(diags)["temporal_resets.reactivated"]) == 1
    last, nxt = odom[before_odom - 1], odom[before_odom]
    assert stamp_ns(nxt.header) > stamp_ns(last.header)
    # continuous to float32 rounding: the chain is float32 upstream of the message (16 m ~ 2e-6 per ulp)
    np.testing.assert_allclose(conv.pose_to_T(nxt.pose.pose), conv.pose_to_T(last.pose.pose), rtol=1e-6, atol=1e-6)
    assert np.trace(np.reshape(nxt.pose.covariance, (6, 6))) > np.trace(np.reshape(last.pose.covariance, (6, 6)))


# --- (e) offline -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def front_bag(tmp_path_factory):
    from conftest import EXAMPLES
    from da3_ros.offline.example_bag import write_example_bag

    path = tmp_path_factory.mktemp("bag") / "rig.mcap"
    write_example_bag(path, EXAMPLES, 6, scale=0.25)
    return path


def test_the_bag_has_odometry_and_a_trajectory_evo_reads(tmp_path, front_bag):
    from test_bag import read_output

    from da3_ros.offline.bag import BagOptions, run_bag

    values = {"model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["front"],
              "temporal.keyframes": 2, **EVERY_MOVE, **RELATIVE_ODOMETRY}
    tum = tmp_path / "front.tum"
    summary = run_bag(front_bag, tmp_path / "out.mcap", values, BagOptions(progress=False, trajectory=str(tum)))
    assert summary.sets_processed == 6 and summary.trajectory_poses == 6
    out = read_output(tmp_path / "out.mcap")
    odom = [m for _, _, m in out["/odometry"]]
    images = [stamp_ns(m.header) for _, _, m in out["/front/depth/image"]]
    assert [stamp_ns(o.header) for o in odom] == images  # every set, in order, with its stamp
    mv = [m for _, _, m in out["/multiview_depth"]]
    assert [m.window_views for m in mv][:3] == [1, 2, 3] and max(m.window_views for m in mv) == 3
    for before, after in zip(mv, mv[1:]):  # the window shrinks only after a restart of the chain emptied it
        assert after.window_views >= before.window_views or before.chain_restart or after.chain_restart
    stamps, poses = read_tum(str(tum))
    assert stamps.tolist() == images
    for o, T in zip(odom, poses):
        np.testing.assert_allclose(conv.pose_to_T(o.pose.pose), T, atol=1e-9)
    from evo.tools import file_interface

    traj = file_interface.read_tum_trajectory_file(str(tum))
    np.testing.assert_allclose(traj.poses_se3, poses, atol=1e-9)


def test_every_n_skips_are_no_gap_for_the_chain(tmp_path, front_bag):
    """Issue 23 item 9: --every-n 2 at 10 Hz processes sets 200 ms apart; temporal.max_gap_s 0.15 s.

    The skipped sets are heard (not silence): one chain, no ``stream_paused`` restart. Before, every set
    restarted it.
    """
    from da3_ros.offline.bag import BagOptions, run_bag

    values = {"model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["front"],
              "temporal.keyframes": 2, "temporal.max_gap_s": 0.15, **EVERY_MOVE}
    summary = run_bag(front_bag, tmp_path / "out.mcap", values, BagOptions(every_n=2, progress=False))
    assert summary.sets_processed == 3 and summary.skipped_every_n == 3
    assert "stream_paused" not in summary.temporal_restarts, dict(summary.temporal_restarts)


def test_media_chains_every_set_and_writes_the_trajectory(tmp_path, video_path):
    from da3_ros.offline.media import parse_sources, run_media
    from da3_ros.offline.setup import ParamFileError

    values = {"model": "random:da3-small@0", "backend": "torch", "process_res": 140, "temporal.keyframes": 2,
              **EVERY_MOVE}
    sources = parse_sources([f"front={video_path}"], [])
    stats = run_media(sources, {}, tmp_path / "out", values, every_n=5, duration_s=0.5)
    stamps, poses = read_tum(str(tmp_path / "out" / "trajectory.tum"))
    assert stats["sets"] == stats["trajectory_poses"] == len(stamps) >= 4
    first = np.load(sorted((tmp_path / "out").glob("set_*.npz"))[1])
    np.testing.assert_allclose(first["T_odom_ref"], poses[1], atol=1e-6)  # TUM: a quaternion of a float32 R
    with pytest.raises(ParamFileError, match="temporal.keyframes"):
        run_media(sources, {}, tmp_path / "none", {**values, "temporal.keyframes": 0}, trajectory=tmp_path / "x.tum")
