"""Metres from a range sensor in the node, over real Fast DDS (issue 27): a LiDAR, a laser scan or a depth camera.

The range data are made from the node's own published depth: each view's depth unprojected through its
published K, scaled by ``S_TRUE``, moved into the sensor's frame through the mounts the test puts on
/tf_static, with 20 % wild returns (and, for the cloud, returns hidden behind the surface). The node must
publish depth = S_TRUE x its relative depth, ``scale_source`` "range", the fit's figures in /diagnostics; a
sensor frame with no transform leaves the set without a range scale (the reason said, the filter holding the
last scale), never a guessed one.
"""
from __future__ import annotations

import math
import signal
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from conftest import EXAMPLES
from da3_ros.core import geometry as geo
from da3_ros.msg import MultiViewDepth
from da3_ros.ros import conversions as conv
from ros_harness import package_executable, process, ros_env, write_params

S_TRUE = 2.5
# optical frames (z forward, x right, y down) on a robot (x forward, y left, z up): one camera looks ahead, one
# behind, so that each one's returns are behind the other camera
R_AHEAD = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
R_BEHIND = np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]])


def _T(R: np.ndarray, t: list[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


MOUNTS = {"front_optical_frame": _T(R_AHEAD, [0.2, 0.0, 0.4]), "back_optical_frame": _T(R_BEHIND, [-0.2, 0.0, 0.4]),
          "lidar": _T(geo.R_from_quaternion(np.array([0.0, 0.0, math.sin(0.2), math.cos(0.2)])), [0.0, 0.05, 0.7])}


def _lidar_points(mv: MultiViewDepth, rng: np.random.Generator, T_lidar_base: np.ndarray | None = None) -> np.ndarray:
    """The set's depth in S_TRUE metres, as the lidar would see it, with wild and hidden returns."""
    T_lidar_base = geo.invert_T(MOUNTS["lidar"]) if T_lidar_base is None else T_lidar_base
    parts = []
    for view in mv.views:
        depth = conv.image_to_array(view.depth)
        K = np.array(view.camera_info.k).reshape(3, 3)
        p, _ = geo.backproject(depth * S_TRUE, K)
        hidden = p[rng.random(len(p)) < 0.2] * 1.7  # the same rays, beyond the surface
        wild = p[rng.random(len(p)) < 0.2]
        wild *= rng.choice([0.4, 2.2], (len(wild), 1))  # nearer ones shadow the surface: outliers of the fit
        T = T_lidar_base @ MOUNTS[view.depth.header.frame_id]
        parts += [geo.transform_points(T, q) for q in (p, hidden, wild)]
    points = np.concatenate(parts)
    return points[rng.permutation(len(points))]


def _stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def _values(diags) -> dict[str, str]:
    return {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}


def _scan_plane(K: np.ndarray, row: int) -> np.ndarray:
    """T_cam_laser: a laser at the camera's centre whose plane holds the rays of pixel row ``row``."""
    c = (row - K[1, 2]) / K[1, 1]  # those rays have y / z = c
    x = np.array([0.0, c, 1.0]) / math.hypot(c, 1.0)  # forward, in the plane
    z = np.array([0.0, -1.0, c]) / math.hypot(c, 1.0)  # the plane's normal, up
    return _T(np.stack([x, np.cross(z, x), z], axis=1), [0.0, 0.0, 0.0])


def _scan(mv: MultiViewDepth, rng: np.random.Generator, header: Header) -> LaserScan:
    """A scan in the plane of the front camera's middle row: per beam, the depth of the pixel it lands on."""
    view = mv.views[0]
    depth, K = conv.image_to_array(view.depth), np.array(view.camera_info.k).reshape(3, 3)
    row = depth.shape[0] // 2
    T_cam_laser = _scan_plane(K, row)
    angles = np.linspace(-0.6, 0.6, 400)
    rays = T_cam_laser[:3, :3] @ np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)])
    u = np.floor(K[0, 0] * rays[0] / rays[2] + K[0, 2] + 0.5).astype(int)
    ok = (u >= 0) & (u < depth.shape[1])
    ranges = np.full(len(angles), np.inf)
    ranges[ok] = S_TRUE * depth[row, u[ok]] / rays[2, ok]  # along the beam to z = S_TRUE x depth
    wild = rng.random(len(angles)) < 0.2
    ranges[wild] *= rng.choice([0.4, 2.2], int(wild.sum()))
    return LaserScan(header=header, angle_min=float(angles[0]), angle_max=float(angles[-1]),
                     angle_increment=float(angles[1] - angles[0]), range_min=0.01, range_max=1000.0,
                     ranges=ranges.astype(np.float32).tolist())


def _depth_image(mv: MultiViewDepth, rng: np.random.Generator, header: Header) -> Image:
    """A depth camera sharing the front camera's optical centre and K: its depth in S_TRUE metres, 20 % wild."""
    depth = conv.image_to_array(mv.views[0].depth) * S_TRUE
    wild = rng.random(depth.shape) < 0.2
    depth[wild] *= rng.choice([0.4, 2.2], int(wild.sum()))
    return conv.depth_to_image(depth.astype(np.float32), header)


KINDS = {"cloud": ("/lidar/points", PointCloud2, "lidar"), "scan": ("/laser/scan", LaserScan, "laser"),
         "depth": ("/tof/depth/image_rect", Image, "tof_optical_frame")}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_range_sensor_gives_every_set_its_metres(kind, tmp_path, domain_id, checker):
    """cloud: a LiDAR above the robot; scan: a laser in the plane of a pixel row; depth: a ToF beside the camera."""
    topic, msg_type, frame = KINDS[kind]
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    tf_pub = checker.node.create_publisher(TFMessage, "/tf_static", latched)
    tf_pub.publish(conv.tf_message([conv.transform_stamped(T, "base_link", f, 0) for f, T in MOUNTS.items()]))
    range_pub = checker.node.create_publisher(msg_type, topic, 10)
    info_pub = checker.node.create_publisher(CameraInfo, "/tof/depth/camera_info", 10)
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    obstacles = checker.collect(PointCloud2, "points_obstacles")  # navigation: only from sets in metres
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["front", "back"],
        "pose_conditioning": "off", "diagnostics_period_s": 0.3, "metric.range_topics": [f"{kind}:{topic}"],
        "metric.range_slop_s": 1.0,
        "sync.camera_timeout_s": 0.0})  # whole sets only: a set of one camera (while the other's subscription
    # connects) is another forward, whose depth the sensor's data were not made from
    player_yaml = write_params(tmp_path / "player.yaml", "rig_player", {
        "camera_names": ["front", "back"], "rate_hz": 4.0,
        "sources": [f"image:{EXAMPLES / 'SOH_000.png'}", f"image:{EXAMPLES / 'SOH_010.png'}"]})
    rng = np.random.default_rng(0)
    made: dict[str, Any] = {}

    def message(sensor_frame: str):
        def make():
            header = Header(stamp=checker.node.get_clock().now().to_msg(), frame_id=sensor_frame)
            if kind == "cloud":
                return conv.xyz_rgb_to_pointcloud2(made["points"], header)
            if kind == "scan":
                return _scan(made["first"], np.random.default_rng(1), header)
            info = made["first"].views[0].camera_info
            info.header = header
            info_pub.publish(info)
            return _depth_image(made["first"], np.random.default_rng(1), header)
        return make

    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"), \
            process("rig_player", player_yaml, domain_id, tmp_path / "player.log"):
        checker.spin_until(lambda: len(mv) >= 1, 120, "a first set (no range message yet)")
        first = made["first"] = mv[0]
        assert first.scale_source == "range" and not first.is_metric and math.isnan(first.scale_raw)
        made["points"] = _lidar_points(first, rng)
        if kind != "cloud":  # the sensor shares the front camera's centre (the scan in one of its pixel rows)
            T_front_sensor = _scan_plane(np.array(first.views[0].camera_info.k).reshape(3, 3),
                                         conv.image_to_array(first.views[0].depth).shape[0] // 2) \
                if kind == "scan" else np.eye(4)
            tf_pub.publish(conv.tf_message([conv.transform_stamped(T_front_sensor, "front_optical_frame", frame, 0)]))
        checker.publish_until(range_pub, message(frame), lambda: mv[-1].is_metric, 60, "a set in range metres")
        checker.publish_until(range_pub, message(frame), lambda: len(mv) >= 3 and mv[-1].is_metric
                              and _values(diags).get("range_inliers", "0") != "0", 30, "the fit in /diagnostics")
        checker.publish_until(range_pub, message(frame), lambda: len(obstacles) >= 1, 30, "obstacles in metres")
        metric = mv[-1]
        status = _values(diags)
        n_metric = len(mv)
        checker.publish_until(range_pub, message("unmounted"), lambda: len(mv) >= n_metric + 2
                              and "'unmounted'" in _values(diags).get("range_reason", ""), 30, "a sensor with no TF")
        unmounted = mv[-1]
        no_tf = _values(diags)
    assert metric.scale_source == "range" and metric.is_metric
    assert abs(metric.scale_raw - S_TRUE) < 1e-6 * S_TRUE and abs(metric.scale - S_TRUE) < 1e-6 * S_TRUE
    for before, after in zip(first.views, metric.views):
        np.testing.assert_allclose(conv.image_to_array(after.depth), conv.image_to_array(before.depth) * S_TRUE,
                                   rtol=1e-5)
        # the estimated poses in the same metres (the back camera's translation from the front one)
        np.testing.assert_allclose(conv.pose_to_T(after.pose)[:3, 3], conv.pose_to_T(before.pose)[:3, 3] * S_TRUE,
                                   rtol=1e-5, atol=1e-9)
    assert float(status["range_residual"]) < 1e-4
    assert 0.5 * int(status["range_points"]) < int(status["range_inliers"]) < 0.97 * int(status["range_points"])
    assert int(status["range_points"]) >= {"cloud": 20000, "scan": 100, "depth": 10000}[kind]
    assert 0 <= float(status["range_offset_s"]) <= 1.0 and status["range_reason"] == ""
    # no transform for the sensor: that set has no range scale (the reason names the frames and the fix); the
    # filter holds the last one, so depth stays in the lidar's metres rather than a guess
    assert "/tf_static" in no_tf["range_reason"] and int(no_tf["range_unknown"]) >= 2
    assert math.isnan(unmounted.scale_raw) and unmounted.is_metric and abs(unmounted.scale - S_TRUE) < 1e-6
    first_metric_ns = min(_stamp_ns(m.header) for m in mv if m.is_metric)
    assert obstacles and all(_stamp_ns(o.header) >= first_metric_ns for o in obstacles)
    assert int(status["nav_not_metric"]) >= 1  # the first, relative set withheld them
    log = (tmp_path / "node.log").read_text()
    assert "Traceback" not in log and _values(diags)["errors"] == "0"


def test_a_range_topic_that_is_the_node_s_own_output_is_refused(tmp_path, domain_id):
    """`scan` is also the node's own navigation output: its depth would scale itself. Said at start, exit 1.

    Found by this file's scan test, whose sensor was first on /scan: once navigation was subscribed, the node
    fitted its own scan. In a namespace the node's scan is /da3/scan, and /scan is the robot's laser again (a
    remapping cannot part them: it renames both uses of the name).
    """
    import subprocess

    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "metric.range_topics": ["scan:/scan"]})
    cmd = [package_executable("depth_node"), "--ros-args", "--params-file", str(node_yaml)]
    refused = subprocess.run(cmd, env=ros_env(domain_id), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "cannot start: ConfigError: metric.range_topics: /scan is this node's own output" in refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr
    remapped = subprocess.Popen([*cmd, "-r", "__ns:=/da3"], env=ros_env(domain_id), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        for line in remapped.stdout:  # started: the worker runs
            if "worker started" in line or "cannot start" in line:
                assert "worker started" in line, line
                break
    finally:
        remapped.send_signal(signal.SIGINT)
        remapped.wait(timeout=20)


def test_a_lidar_moving_on_tf_is_taken_at_its_message_stamp(tmp_path, domain_id, checker):
    """The lidar's mount on /tf (a turning sensor): each cloud is moved with the transform of its own stamp.

    The mount turns 7 degrees per message, so a transform of another stamp would misplace every return: the
    fit would be off or refused. Exact only if each message is taken with its own stamp's chain.
    """
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    checker.node.create_publisher(TFMessage, "/tf_static", latched).publish(conv.tf_message(
        [conv.transform_stamped(T, "base_link", f, 0) for f, T in MOUNTS.items() if f != "lidar"]))
    tf_pub = checker.node.create_publisher(TFMessage, "/tf", 100)
    cloud_pub = checker.node.create_publisher(PointCloud2, "/lidar/points", 10)
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["front", "back"],
        "pose_conditioning": "off", "diagnostics_period_s": 0.3, "metric.range_topics": ["cloud:/lidar/points"],
        "metric.range_slop_s": 1.0, "sync.camera_timeout_s": 0.0})
    player_yaml = write_params(tmp_path / "player.yaml", "rig_player", {
        "camera_names": ["front", "back"], "rate_hz": 4.0,
        "sources": [f"image:{EXAMPLES / 'SOH_000.png'}", f"image:{EXAMPLES / 'SOH_010.png'}"]})
    sent = [0]

    def cloud():
        k = sent[0] = sent[0] + 1
        stamp = checker.node.get_clock().now()
        T_base_lidar = MOUNTS["lidar"] @ _T(geo.R_from_quaternion(np.array([0.0, 0, math.sin(np.radians(3.5 * k)),
                                                                            math.cos(np.radians(3.5 * k))])), [0, 0, 0])
        tf_pub.publish(conv.tf_message([conv.transform_stamped(T_base_lidar, "base_link", "lidar",
                                                               stamp.nanoseconds)]))
        points = _lidar_points(first, np.random.default_rng(0), T_lidar_base=geo.invert_T(T_base_lidar))
        return conv.xyz_rgb_to_pointcloud2(points, Header(stamp=stamp.to_msg(), frame_id="lidar"))

    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"), \
            process("rig_player", player_yaml, domain_id, tmp_path / "player.log"):
        checker.spin_until(lambda: len(mv) >= 1, 120, "a first set")
        first = mv[0]
        checker.publish_until(cloud_pub, cloud, lambda: sum(m.is_metric for m in mv) >= 3, 60, "sets in range metres")
    fitted = [m for m in mv if not math.isnan(m.scale_raw)]
    assert len(fitted) >= 3 and all(abs(m.scale_raw - S_TRUE) < 1e-6 * S_TRUE for m in fitted), \
        [m.scale_raw for m in mv]
    assert _values(diags).get("errors") == "0"
