"""Metres from a range sensor in the node, over real Fast DDS (issue 27): a LiDAR cloud scales every set.

The cloud is made from the node's own published depth: each view's depth unprojected through its published
K, scaled by ``S_TRUE``, moved into the lidar's frame through the mounts the test puts on /tf_static, with 20 %
wild returns and returns hidden behind the surface. The node must publish depth = S_TRUE x its relative depth,
``scale_source`` "range", the fit's figures in /diagnostics; a cloud in a frame with no transform leaves the
set without a range scale (the reason said, the filter holding the last scale), never a guessed one.
"""
from __future__ import annotations

import math

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from conftest import EXAMPLES
from da3_ros.core import geometry as geo
from da3_ros.msg import MultiViewDepth
from da3_ros.ros import conversions as conv
from ros_harness import process, write_params

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


def _lidar_points(mv: MultiViewDepth, rng: np.random.Generator) -> np.ndarray:
    """The set's depth in S_TRUE metres, as the lidar would see it, with wild and hidden returns."""
    T_lidar_base = geo.invert_T(MOUNTS["lidar"])
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


def _values(diags) -> dict[str, str]:
    return {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}


def test_a_lidar_cloud_gives_every_set_the_sensor_s_metres(tmp_path, domain_id, checker):
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    checker.node.create_publisher(TFMessage, "/tf_static", latched).publish(conv.tf_message(
        [conv.transform_stamped(T, "base_link", frame, 0) for frame, T in MOUNTS.items()]))
    cloud_pub = checker.node.create_publisher(PointCloud2, "/lidar/points", 10)
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": ["front", "back"],
        "pose_conditioning": "off", "diagnostics_period_s": 0.3, "metric.range_topics": ["cloud:/lidar/points"],
        "metric.range_slop_s": 1.0})
    player_yaml = write_params(tmp_path / "player.yaml", "rig_player", {
        "camera_names": ["front", "back"], "rate_hz": 4.0,
        "sources": [f"image:{EXAMPLES / 'SOH_000.png'}", f"image:{EXAMPLES / 'SOH_010.png'}"]})
    rng = np.random.default_rng(0)

    def cloud(frame: str):
        def make():
            header = Header(stamp=checker.node.get_clock().now().to_msg(), frame_id=frame)
            return conv.xyz_rgb_to_pointcloud2(points, header)
        return make

    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"), \
            process("rig_player", player_yaml, domain_id, tmp_path / "player.log"):
        checker.spin_until(lambda: len(mv) >= 1, 120, "a first set (no range message yet)")
        first = mv[0]
        assert first.scale_source == "range" and not first.is_metric and math.isnan(first.scale_raw)
        points = _lidar_points(first, rng)
        checker.publish_until(cloud_pub, cloud("lidar"), lambda: mv[-1].is_metric, 60, "a set in range metres")
        checker.publish_until(cloud_pub, cloud("lidar"), lambda: len(mv) >= 3 and mv[-1].is_metric
                              and _values(diags).get("range_inliers", "0") != "0", 30, "the fit in /diagnostics")
        metric = mv[-1]
        status = _values(diags)
        n_metric = len(mv)
        checker.publish_until(cloud_pub, cloud("velodyne"), lambda: len(mv) >= n_metric + 2
                              and "'velodyne'" in _values(diags).get("range_reason", ""), 30, "a cloud with no TF")
        unmounted = mv[-1]
        no_tf = _values(diags)
    assert metric.scale_source == "range" and metric.is_metric
    assert abs(metric.scale_raw - S_TRUE) < 1e-6 * S_TRUE and abs(metric.scale - S_TRUE) < 1e-6 * S_TRUE
    for before, after in zip(first.views, metric.views):
        np.testing.assert_allclose(conv.image_to_array(after.depth), conv.image_to_array(before.depth) * S_TRUE,
                                   rtol=1e-5)
    assert float(status["range_residual"]) < 1e-4
    assert 0.5 * int(status["range_points"]) < int(status["range_inliers"]) < 0.97 * int(status["range_points"])
    assert 0 <= float(status["range_offset_s"]) <= 1.0 and status["range_reason"] == ""
    # no transform for the sensor: that set has no range scale (the reason names the frames and the fix); the
    # filter holds the last one, so depth stays in the lidar's metres rather than a guess
    assert "/tf_static" in no_tf["range_reason"] and int(no_tf["range_unknown"]) >= 2
    assert math.isnan(unmounted.scale_raw) and unmounted.is_metric and abs(unmounted.scale - S_TRUE) < 1e-6
    log = (tmp_path / "node.log").read_text()
    assert "Traceback" not in log and _values(diags)["errors"] == "0"
