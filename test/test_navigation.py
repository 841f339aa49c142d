"""Obstacle cloud and laser scan on analytic scenes: a floor, a box and a wall seen by a tilted camera."""
import math

import numpy as np
import pytest
from std_msgs.msg import Header

from da3_ros.ros import conversions as conv
from da3_ros.core import geometry as geo
from da3_ros.core import navigation as nav
from da3_ros.core.config import NavConfig, OutputConfig
from da3_ros.core.results import NavInputs, SetResult, nav_inputs
from da3_ros.ros.messages import SetMessages
from da3_ros.core.prediction import Prediction
from da3_ros.core.rig import RigResult
from da3_ros.core.static_tf import StaticTfBuffer

H, W = 280, 504
K = np.array([[250.0, 0, 251.5], [0, 250.0, 139.5], [0, 0, 1]])
BOX = (np.array([2.0, -0.3, 0.0]), np.array([2.4, 0.3, 0.5]))  # base_link, metres
WALL_X = 4.0
R_OPTICAL = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # optical axes (x right, y down, z fwd) in base axes


def _Ry(a):
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def mount(height_m=1.0, pitch_down_deg=15.0):
    """T_base_optical of a forward camera ``height_m`` up, pitched down."""
    T = np.eye(4)
    T[:3, :3] = _Ry(math.radians(pitch_down_deg)) @ R_OPTICAL
    T[:3, 3] = [0.0, 0.0, height_m]
    return T


def render(T_base_opt):
    """z-depth of the floor (z=0), the box and the wall (x=4) as seen through K from T_base_opt."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    d_opt = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1: t = depth
    d = d_opt @ T_base_opt[:3, :3].T
    c = T_base_opt[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[..., 2] < 0, -c[2] / d[..., 2], np.inf)
        t_wall = np.where(d[..., 0] > 0, (WALL_X - c[0]) / d[..., 0], np.inf)
        lo, hi = [(b - c) / d for b in BOX]
        t_near = np.minimum(lo, hi).max(-1)
        t_far = np.maximum(lo, hi).min(-1)
    t_box = np.where((t_near <= t_far) & (t_far > 0), t_near, np.inf)
    return np.minimum(np.minimum(t_floor, t_wall), t_box).astype(np.float32)


def scene_points(T_base_opt, stride=2):
    depth = render(T_base_opt)
    pts, pix = geo.backproject(depth, K, stride=stride)
    return nav.transform_points(T_base_opt, pts), depth, pix


def test_obstacles_hold_the_box_and_wall_not_the_floor():
    xyz, _, _ = scene_points(mount())
    assert (xyz[:, 2] < 0.01).mean() > 0.3  # the scene really has a lot of floor
    cfg = nav.ObstacleConfig(voxel_m=0.05)
    obs, _ = nav.obstacle_cloud(xyz, cfg)
    assert len(obs) > 100 and obs[:, 2].min() >= cfg.min_height_m - 1e-6
    in_box = np.all((obs >= BOX[0] - 0.05) & (obs <= BOX[1] + 0.05), axis=1)
    on_wall = np.abs(obs[:, 0] - WALL_X) < 0.05
    assert in_box.sum() > 20 and on_wall.sum() > 20
    assert np.all(in_box | on_wall)  # nothing else: the floor is gone


def test_scan_ranges_equal_the_analytic_distances():
    xyz, _, _ = scene_points(mount())
    obs, _ = nav.obstacle_cloud(xyz, nav.ObstacleConfig(voxel_m=0.05))
    # 2 degree bins: wider than the 5 cm voxel spacing at the box (2 m), so every bin has its nearest return
    scan_cfg = nav.ScanConfig(angle_min=-0.6, angle_max=0.6, angle_increment=math.radians(2.0))
    ranges = nav.laser_scan_ranges(obs, scan_cfg)
    angles = scan_cfg.angle_min + np.arange(scan_cfg.num_bins) * scan_cfg.angle_increment  # as published
    box_half_angle = math.atan2(0.3, 2.0)  # the front face's corners: the box's widest bearing
    for a, r in zip(angles, ranges):
        near, far = sorted((abs(a - scan_cfg.angle_increment / 2), abs(a + scan_cfg.angle_increment / 2)))
        if far < box_half_angle:  # the whole bin sees the box's front face (x = 2)
            assert r == pytest.approx(2.0 / math.cos(a), abs=0.05 + 0.02), math.degrees(a)
        elif near > box_half_angle + 0.01 and np.isfinite(r):  # the wall (where the camera's view reaches it)
            assert r == pytest.approx(WALL_X / math.cos(a), abs=0.05 + 0.03), math.degrees(a)
    assert np.isfinite(ranges).sum() > 20
    assert np.isinf(nav.laser_scan_ranges(obs, nav.ScanConfig(angle_min=2.0, angle_max=3.0))).all()  # behind


def test_heights_are_in_the_target_frame_through_the_tf_chain():
    """A tilted mount given as base_link -> camera_link -> optical frame on /tf_static: the floor stays out."""
    T = mount(height_m=0.8, pitch_down_deg=25.0)
    tf = StaticTfBuffer()
    T_base_link = np.eye(4)
    T_base_link[:3, :3], T_base_link[:3, 3] = _Ry(math.radians(25.0)), [0.0, 0.0, 0.8]
    T_link_opt = np.eye(4)
    T_link_opt[:3, :3] = R_OPTICAL
    tf.add("base_link", "camera_link", T_base_link)
    tf.add("camera_link", "camera_optical_frame", T_link_opt)
    inputs = nav_inputs(NavConfig(nav.ObstacleConfig(), nav.ScanConfig(), "base_link"), tf, ["camera_optical_frame"])
    np.testing.assert_allclose(inputs.T_target_cam[0], T, atol=1e-12)
    depth = render(T)
    out = _set_outputs(depth, inputs)
    obs = conv.pointcloud2_to_xyz_rgb(out.obstacles())[0]
    assert len(obs) > 50 and obs[:, 2].min() >= 0.05 - 1e-6
    assert out.obstacles().header.frame_id == "base_link" and out.scan().header.frame_id == "base_link"


def test_a_missing_tf_link_is_named():
    tf = StaticTfBuffer()
    tf.add("base_link", "camera_link", np.eye(4))
    inputs = nav_inputs(NavConfig(nav.ObstacleConfig(), nav.ScanConfig(), "base_link"), tf, ["front_optical_frame"])
    assert inputs.T_target_cam is None and "front_optical_frame" in inputs.missing
    out = _set_outputs(render(mount()), inputs)
    with pytest.raises(ValueError, match="no /tf_static path from 'base_link' to camera frame"):
        out.obstacles()


def test_isolated_points_are_removed_and_dense_ones_kept():
    rng = np.random.default_rng(0)
    dense = rng.normal([2.0, 0.0, 0.5], 0.05, (400, 3)).astype(np.float32)
    lonely = np.array([[1.0, 1.0, 0.5], [3.0, -2.0, 1.0], [0.5, 0.5, 1.5]], np.float32)
    drop = nav.isolated_mask(np.concatenate([dense, lonely]), 0.15, 3)
    assert not drop[:400].any() and drop[400:].all()


def test_voxel_downsample_keeps_one_mean_point_per_voxel():
    xyz = np.array([[0.01, 0.01, 0.01], [0.03, 0.03, 0.03], [0.21, 0.0, 0.0]], np.float32)
    out, conf = nav.voxel_downsample(xyz, 0.1, np.array([1.0, 3.0, 5.0], np.float32))
    order = np.argsort(out[:, 0])
    np.testing.assert_allclose(out[order], [[0.02, 0.02, 0.02], [0.21, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(conf[order], [2.0, 5.0])


def test_ground_plane_mode_handles_a_wrong_mounting_height():
    """The TF says the camera is 0.2 m lower than it is: 'z' keeps the floor, 'plane' still removes it."""
    xyz, _, _ = scene_points(mount(height_m=1.0))
    xyz = xyz - np.array([0, 0, 0.2], np.float32)  # floor at z = -0.2 in the (wrong) target frame
    with_z = nav.obstacle_cloud(xyz + np.array([0, 0, 0.3], np.float32), nav.ObstacleConfig(ground="z"))[0]
    assert (with_z[:, 2] < 0.15).sum() > 100  # floor (now at z = +0.1) counted as obstacle
    plane = nav.fit_ground_plane(xyz)
    assert plane is not None and plane[0][2] > 0.999 and plane[1] == pytest.approx(0.2, abs=0.01)
    obs = nav.obstacle_cloud(xyz, nav.ObstacleConfig(ground="plane"))[0]
    in_box_or_wall = np.all((obs >= BOX[0] - [0.05, 0.05, 0.25]) & (obs <= BOX[1] + 0.05), 1) | (
        np.abs(obs[:, 0] - WALL_X) < 0.05)
    assert len(obs) > 50 and in_box_or_wall.all()


def test_range_limit_keeps_only_near_obstacles():
    xyz, _, _ = scene_points(mount())
    obs, _ = nav.obstacle_cloud(xyz, nav.ObstacleConfig(max_range_m=3.0))
    assert len(obs) > 20 and np.hypot(obs[:, 0], obs[:, 1]).max() <= 3.0 + 1e-6  # the box, not the wall at 4 m


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="nav.ground"):
        nav.ObstacleConfig(ground="floor")
    with pytest.raises(ValueError, match="must exceed"):
        nav.ObstacleConfig(min_height_m=1.0, max_height_m=0.5)
    with pytest.raises(ValueError, match="angle"):
        nav.ScanConfig(angle_min=1.0, angle_max=0.0)


def test_clouds_carry_confidence_when_asked():
    depth = render(mount())
    conf = np.linspace(1, 2, H * W, dtype=np.float32).reshape(H, W)
    out = _set_outputs(depth, NavInputs("base_link", mount()[None]), confidence=conf,
                       cfg=OutputConfig(confidence_field=True, stride=4))
    msg = out.points(0)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "confidence"]
    xyz, _ = conv.pointcloud2_to_xyz_rgb(msg)
    c = conv.pointcloud2_field(msg, "confidence")
    # each point's confidence is its pixel's: recompute the pixel from the point through K
    u = np.rint(K[0, 0] * xyz[:, 0] / xyz[:, 2] + K[0, 2]).astype(int)
    v = np.rint(K[1, 1] * xyz[:, 1] / xyz[:, 2] + K[1, 2]).astype(int)
    np.testing.assert_array_equal(c, conf[v, u])
    assert "confidence" in [f.name for f in out.obstacles().fields]
    assert "confidence" not in [f.name for f in _set_outputs(depth, None, confidence=conf).points(0).fields]


def _set_outputs(depth, inputs, confidence=None, cfg=None):
    cfg = cfg or OutputConfig()
    rgb = np.zeros((1, H, W, 3), np.uint8)
    pred = Prediction(depth=depth[None], is_metric=True, K_proc=K[None], K_source="camera",
                      confidence=None if confidence is None else confidence[None], rgb_proc=rgb,
                      T_cam_world=np.eye(4)[None])
    result = RigResult(pred, 0, np.eye(4)[None], conditioned=False)
    return SetMessages(SetResult(result, ["front"], ["camera_optical_frame"], [0], cfg, "test", [], inputs))


def _nearest_ray_expectation(xyz, cfg):
    """Per ray, the nearest in-band point whose bearing is nearest that ray's published angle (brute force)."""
    n = cfg.num_bins
    ray_angles = cfg.angle_min + np.arange(n) * cfg.angle_increment
    r = np.hypot(xyz[:, 0].astype(np.float64), xyz[:, 1])
    a = np.arctan2(xyz[:, 1], xyz[:, 0].astype(np.float64))
    band = (xyz[:, 2] >= cfg.min_height_m) & (xyz[:, 2] <= cfg.max_height_m) & (r >= cfg.range_min) & (
        r <= cfg.range_max)
    diff = np.abs(np.angle(np.exp(1j * (a[band, None] - ray_angles[None]))))  # wrapped, (points, rays)
    nearest = diff.argmin(1)
    within = diff[np.arange(len(nearest)), nearest] <= cfg.angle_increment / 2 + 1e-12
    expected = np.full(n, np.inf)
    np.minimum.at(expected, nearest[within], r[band][within])
    return expected.astype(np.float32)


@pytest.mark.parametrize("voxel_m", [0.05, 0.08])
def test_scan_has_a_return_wherever_an_in_band_point_is(voxel_m):
    """The scan comes from the points before voxel thinning: no clearing (+Inf) ray where an obstacle is.

    Built from the thinned cloud, 0.5 degree rays at the wall 4 m away fall between voxel centres (+Inf: the
    costmap clears an obstacle) and a voxel's mean is up to half a diagonal farther than the nearest point.
    """
    T = mount()
    scan_cfg = nav.ScanConfig(angle_min=-0.7, angle_max=0.7)
    inputs = NavInputs("base_link", T[None], "", nav.ObstacleConfig(voxel_m=voxel_m), scan_cfg)
    out = _set_outputs(render(T), inputs)
    xyz = nav.transform_points(T, out.result.cloud_arrays(0)[0])  # every point of the cloud, in base_link
    expected = _nearest_ray_expectation(xyz, scan_cfg)
    msg = out.scan()
    ranges = np.asarray(msg.ranges, np.float32)
    assert np.isfinite(expected).sum() > 50
    holes = np.isfinite(expected) & ~np.isfinite(ranges)
    assert not holes.any(), f"{holes.sum()} of {np.isfinite(expected).sum()} rays clear where points are"
    np.testing.assert_array_equal(ranges, expected)  # each ray: exactly its nearest point


def test_the_scan_band_may_be_wider_than_the_obstacle_band():
    """scan.max_height_m above nav.max_height_m: points between the two are in the scan, not in the obstacles."""
    T = mount()
    inputs = NavInputs("base_link", T[None], "", nav.ObstacleConfig(max_height_m=0.3),
                       nav.ScanConfig(angle_min=-0.7, angle_max=0.7, max_height_m=1.0))
    out = _set_outputs(render(T), inputs)
    assert conv.pointcloud2_to_xyz_rgb(out.obstacles())[0][:, 2].max() <= 0.3 + 1e-6
    ranges = np.asarray(out.scan().ranges)
    # the box's face (x = 2 m) is 0.5 m high: above the obstacle band, but the scan sees all of it
    xyz = nav.transform_points(T, out.result.cloud_arrays(0)[0])
    np.testing.assert_array_equal(ranges, _nearest_ray_expectation(xyz, inputs.scan))


@pytest.mark.parametrize("angle_min, angle_max", [(-math.pi, math.pi), (-0.6, 0.6), (0.0, 2 * math.pi)])
def test_a_single_point_s_bearing_is_recovered_within_half_an_increment(angle_min, angle_max):
    """Ray i is published at angle_min + i * increment: the ray a point lands in is the one nearest its bearing."""
    cfg = nav.ScanConfig(angle_min=angle_min, angle_max=angle_max, angle_increment=math.radians(1.0))
    rng = np.random.default_rng(1)
    ray_angles = angle_min + np.arange(cfg.num_bins) * cfg.angle_increment
    bearings = np.concatenate([rng.uniform(angle_min, angle_max - cfg.angle_increment / 2, 300),
                               ray_angles[::7],  # exactly on a ray
                               ray_angles[::11] + 0.49 * cfg.angle_increment,  # just before the next ray's bin
                               ray_angles[1::13] - 0.49 * cfg.angle_increment,
                               [angle_max - 0.3 * cfg.angle_increment]])  # the full circle: wraps to ray 0
    for bearing in bearings:
        point = np.array([[3.0 * math.cos(bearing), 3.0 * math.sin(bearing), 0.5]], np.float32)
        msg = conv.laser_scan(nav.laser_scan_ranges(point, cfg), Header(frame_id="base_link"), cfg.angle_min,
                              cfg.angle_increment, cfg.range_min, cfg.range_max)
        (hit,) = np.flatnonzero(np.isfinite(msg.ranges))
        published = msg.angle_min + hit * msg.angle_increment
        off = abs(math.remainder(published - bearing, 2 * math.pi))
        assert off <= cfg.angle_increment / 2 + 1e-6, (math.degrees(bearing), math.degrees(published))
        assert msg.ranges[hit] == pytest.approx(3.0, abs=1e-5)
