"""Navigation outputs and the managed (lifecycle) node over real Fast DDS, in separate processes."""
import math

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, LaserScan, PointCloud2
from tf2_msgs.msg import TFMessage

from da3_ros.ros import conversions as conv
from da3_ros.msg import MultiViewDepth
from ros_harness import diag_values, process, write_params
from test_node import RES, STEREO_PHOTOS, _start


def _publish_mount(checker, frames):
    """/tf_static: base_link -> each camera's optical frame, 1 m up, looking forward (REP 103 axes)."""
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = checker.node.create_publisher(TFMessage, "/tf_static", latched)
    edges = []
    for k, frame in enumerate(frames):
        T = np.eye(4)
        T[:3, :3] = [[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]
        T[:3, 3] = [0.0, -0.1 * k, 1.0]
        edges.append(conv.transform_stamped(T, "base_link", frame, 0))
    pub.publish(conv.tf_message(edges))
    return pub


# A calibrated stereo rig: its known extrinsics make depth metric ("rig"), which navigation needs
METRIC_RIG = {"camera_names": ["left", "right"], "sync.mode": "exact",
              "cameras": {"left": {"T_ref_cam": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]},
                          "right": {"T_ref_cam": [0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]}}}


def test_obstacles_and_scan_in_the_target_frame(tmp_path, domain_id, checker):
    _publish_mount(checker, ["left_optical_frame", "right_optical_frame"])
    params = {**METRIC_RIG, "cloud.confidence_field": True,
              "nav.max_height_m": 3.0, "nav.outlier_min_neighbours": 0, "scan.max_height_m": 3.0}
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    node_cm, player_cm = _start(tmp_path, domain_id, params, STEREO_PHOTOS)
    with node_cm, player_cm:
        checker.spin_until(lambda: len(mv) >= 2, 90, "sets without navigation subscribers")
        checker.spin_for(1.2)
        assert "nav_ms.p50" not in diag_values(diags[-1])  # not subscribed: not computed
        obstacles = checker.collect(PointCloud2, "points_obstacles")
        scans = checker.collect(LaserScan, "scan")
        checker.spin_until(lambda: len(obstacles) >= 2 and len(scans) >= 2, 90, "obstacles and scan")
        checker.spin_for(1.2)
    values = diag_values(diags[-1])
    assert values["nav_ms.p50"] > 0 and values["nav_unavailable"] == 0
    stamps = {conv.stamp_to_ns(m.header.stamp) for m in mv}
    for cloud, scan in zip(obstacles, scans):
        assert cloud.header.frame_id == "base_link" == scan.header.frame_id
        assert conv.stamp_to_ns(cloud.header.stamp) in stamps and conv.stamp_to_ns(scan.header.stamp) in stamps
    xyz, _ = conv.pointcloud2_to_xyz_rgb(obstacles[-1])
    assert len(xyz) > 0 and xyz[:, 2].min() >= 0.05 - 1e-6 and xyz[:, 2].max() <= 3.0 + 1e-6
    assert [f.name for f in obstacles[-1].fields] == ["x", "y", "z", "confidence"]
    s = scans[-1]
    assert len(s.ranges) == round(2 * math.pi / s.angle_increment) and np.isfinite(s.ranges).any()


def test_a_missing_tf_link_is_counted_and_the_node_survives(tmp_path, domain_id, checker):
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    node_cm, player_cm = _start(tmp_path, domain_id, METRIC_RIG, STEREO_PHOTOS)
    with node_cm as node, player_cm:
        checker.collect(PointCloud2, "points_obstacles")
        checker.spin_until(lambda: diags and diag_values(diags[-1]).get("nav_unavailable", 0) >= 2, 90,
                           "nav_unavailable counted")
        checker.spin_until(lambda: any(d.status[0].level == DiagnosticStatus.WARN and "points_obstacles" in
                                       d.status[0].message for d in diags), 30, "/diagnostics WARN")
        assert node.poll() is None
    assert "no /tf_static path from 'base_link'" in (tmp_path / "node.log").read_text()


def test_relative_depth_never_reaches_navigation(tmp_path, domain_id, checker):
    """Issue 15, item 4: relative depth never reaches the navigation outputs.

    A rig without metres (random da3-small, no calibration) publishes no obstacles, no scan and no
    camera_frames TF; the reason is counted and /diagnostics says it (WARN).
    """
    _publish_mount(checker, ["left_optical_frame", "right_optical_frame"])
    params = {"camera_names": ["left", "right"], "pose_conditioning": "off", "tf.mode": "camera_frames",
              "nav.outlier_min_neighbours": 0}
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    obstacles = checker.collect(PointCloud2, "points_obstacles")
    scans = checker.collect(LaserScan, "scan")
    tf = checker.collect(TFMessage, "/tf")
    node_cm, player_cm = _start(tmp_path, domain_id, params, STEREO_PHOTOS)
    with node_cm as node, player_cm:
        checker.spin_until(lambda: diags and diag_values(diags[-1]).get("nav_not_metric", 0) >= 3
                           and diag_values(diags[-1]).get("tf_not_metric", 0) >= 3, 120, "withheld, counted")
        checker.spin_until(lambda: any(d.status[0].level == DiagnosticStatus.WARN and "not metric" in
                                       d.status[0].message for d in diags), 30, "/diagnostics WARN")
        assert node.poll() is None
    assert mv and not any(m.is_metric for m in mv)
    assert obstacles == [] and scans == [] and tf == []
    assert "need metres" in (tmp_path / "node.log").read_text()


def _transition(checker, client, transition_id: int) -> bool:
    from lifecycle_msgs.srv import ChangeState

    req = ChangeState.Request()
    req.transition.id = transition_id
    future = client.call_async(req)
    checker.spin_until(future.done, 120, f"transition {transition_id}")
    return future.result().success


def test_lifecycle_node_publishes_only_while_active_and_frees_the_engine(tmp_path, domain_id, checker):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth",
                             {"model": "random:da3-small@0", "camera_names": ["left", "right"], "process_res": RES})
    player_yaml = write_params(tmp_path / "player.yaml", "rig_player", STEREO_PHOTOS)
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    # the witness of "nothing published": the player's frames keep arriving meanwhile (no fixed wait)
    frames = checker.collect(Image, "left/image_raw", qos_profile_sensor_data)

    def while_frames_arrive(n: int, what: str) -> None:
        start = len(frames)
        checker.spin_until(lambda: len(frames) >= start + n, 60, what)

    change = checker.node.create_client(ChangeState, "/da3_depth/change_state")
    get = checker.node.create_client(GetState, "/da3_depth/get_state")
    with process("depth_lifecycle_node", node_yaml, domain_id, tmp_path / "node.log"), \
            process("rig_player", player_yaml, domain_id, tmp_path / "player.log"):
        checker.spin_until(lambda: change.service_is_ready() and get.service_is_ready(), 60, "lifecycle services")
        assert _transition(checker, change, Transition.TRANSITION_CONFIGURE)
        while_frames_arrive(6, "6 camera frames while configured")
        assert not mv and not diags  # configured, not active: nothing published
        assert _transition(checker, change, Transition.TRANSITION_ACTIVATE)
        checker.spin_until(lambda: len(mv) >= 2 and diags, 90, "sets once active")
        assert _transition(checker, change, Transition.TRANSITION_DEACTIVATE)
        while_frames_arrive(1, "a camera frame after deactivate")  # what was in flight arrives
        n_sets, n_diags = len(mv), len(diags)
        while_frames_arrive(6, "6 camera frames while inactive")
        assert (len(mv), len(diags)) == (n_sets, n_diags)  # inactive: nothing more
        assert _transition(checker, change, Transition.TRANSITION_CLEANUP)
        future = get.call_async(GetState.Request())
        checker.spin_until(future.done, 30, "get_state")
        assert future.result().current_state.label == "unconfigured"
        checker.spin_for(0.5)
    assert "engine released" in (tmp_path / "node.log").read_text()
