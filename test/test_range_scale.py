"""Metres from range sensors (issue 27), the ROS-free part: returns into cameras, z-buffer, the robust fit.

The range data are made from a depth map with a known scale, as the node's own depth would give them: every
valid pixel unprojected through K, scaled by ``s_true``, moved into a sensor frame with a known mount, plus
20 % wild returns and returns hidden behind nearer surfaces. The fit must find ``s_true`` to 1e-6.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from da3_ros.core import geometry as geo
from da3_ros.core.errors import ConfigError
from da3_ros.core.prediction import Prediction
from da3_ros.core.range_scale import (LatestByStamp, RangeFitConfig, RangeKind, RangeReading, RangeSet, fit_scale,
                                      into_cameras, nearest_per_pixel, parse_range_topics, range_scaled)
from da3_ros.core.static_tf import StaticTfBuffer

FRAMES = ["left_optical", "right_optical"]
S_TRUE = 2.7183


def _mount(yaw_deg: float, t: list[float], flip: bool = False) -> np.ndarray:
    """A rotation about z (then, ``flip``, half a turn about x: looking the other way) and a translation."""
    a = math.radians(yaw_deg)
    T = np.eye(4)
    T[:3, :3] = [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
    if flip:
        T[:3, :3] = T[:3, :3] @ np.diag([1.0, -1.0, -1.0])
    T[:3, 3] = t
    return T


def _scene(seed: int = 0) -> tuple[Prediction, StaticTfBuffer]:
    """Two views' relative depth (a slanted wall with a box in front), K, confidence; TF base->cams, base->lidar.

    The cameras look opposite ways, so that each one's scene is behind the other (each view its own scene).
    """
    rng = np.random.default_rng(seed)
    h, w = 42, 56
    v, u = np.mgrid[0:h, 0:w]
    depth = np.stack([1.5 + 0.02 * u + 0.01 * v, 2.0 + 0.015 * v]).astype(np.float32)
    depth[:, 10:20, 15:30] = 0.8  # a box in front: what is behind it is hidden from the camera
    K = np.array([[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]])
    confidence = (1.0 + rng.random((2, h, w))).astype(np.float32)
    pred = Prediction(depth, False, np.stack([K, K]), "camera", confidence=confidence)
    tf = StaticTfBuffer()
    tf.add("base", FRAMES[0], _mount(-90, [0.1, 0.05, 0.3]))
    tf.add("base", FRAMES[1], _mount(-80, [0.1, -0.05, 0.3], flip=True))
    tf.add("base", "lidar", _mount(30, [0.0, 0.0, 0.6]))
    return pred, tf


def _returns(pred: Prediction, tf: StaticTfBuffer, s: float, seed: int = 1) -> np.ndarray:
    """The scene in metres as the lidar sees it, with 20 % wild returns and returns hidden behind the box."""
    rng = np.random.default_rng(seed)
    points = []
    for i, frame in enumerate(FRAMES):
        p, _ = geo.backproject(pred.depth[i] * s, pred.K_of(i))
        hidden = p[rng.random(len(p)) < 0.2] * rng.uniform(1.3, 3.0, (1, 1))  # same ray, farther: behind
        wild = p[rng.random(len(p)) < 0.2]
        wild *= rng.choice([0.3, 0.5, 1.8, 2.5], (len(wild), 1))  # the nearer ones shadow the surface
        points += [geo.transform_points(tf.lookup("lidar", frame), q) for q in (p, hidden, wild)]
    return np.concatenate(points).astype(np.float64)


def test_the_fit_finds_the_true_scale_through_outliers_and_hidden_returns():
    pred, tf = _scene()
    ranges = RangeSet([RangeReading(_returns(pred, tf, S_TRUE), "lidar")], RangeFitConfig(), offset_s=0.01)
    scaled, fit = range_scaled(pred, into_cameras(ranges, FRAMES, tf.lookup), views=2)
    assert fit.known and fit.scale == pytest.approx(S_TRUE, rel=1e-6), fit
    assert fit.residual < 1e-5 and 0.5 * fit.points < fit.inliers < 0.95 * fit.points and fit.offset_s == 0.01
    assert scaled.scale_source == "range" and scaled.is_metric and scaled.scale_raw == pytest.approx(S_TRUE, rel=1e-6)
    np.testing.assert_allclose(scaled.depth, pred.depth * S_TRUE, rtol=1e-5)


def test_hidden_returns_are_removed_by_the_z_buffer_not_by_luck():
    """Only hidden returns (and the true ones) on a pixel: the nearest is kept, every time."""
    pred, _ = _scene()
    p, _ = geo.backproject(pred.depth[0] * 2.0, pred.K_of(0))
    pixel, z = nearest_per_pixel(np.concatenate([p * 3.0, p, p * 1.5]).T, pred.K_of(0), pred.hw, 100.0)
    assert len(pixel) == len(p)
    np.testing.assert_allclose(z, pred.depth[0].reshape(-1)[pixel] * 2.0, rtol=1e-6)


def test_a_sensor_without_a_transform_leaves_the_scale_unknown_with_the_reason():
    pred, tf = _scene()
    points = _returns(pred, tf, S_TRUE)
    ranges = RangeSet([RangeReading(points, "velodyne")], RangeFitConfig())
    scaled, fit = range_scaled(pred, into_cameras(ranges, FRAMES, tf.lookup), views=2)
    assert not fit.known and "'velodyne' -> 'left_optical'" in fit.reason and "/tf_static" in fit.reason
    assert math.isnan(scaled.scale_raw) and not scaled.is_metric
    np.testing.assert_array_equal(scaled.depth, pred.depth)  # nothing guessed


@pytest.mark.parametrize("case", ["too_few", "another_scene", "noisy"])
def test_no_scale_is_guessed_from_returns_that_do_not_hold(case):
    pred, tf = _scene()
    cfg = RangeFitConfig(min_points=20, max_residual=0.05)
    points = _returns(pred, tf, S_TRUE)
    rng = np.random.default_rng(3)
    if case == "too_few":
        points = points[:10]
    elif case == "another_scene":  # every return at a random range on its ray
        points = points * rng.uniform(0.2, 5.0, (len(points), 1))
    else:  # returns agree on a scale but scatter by 15 %: above max_residual
        points = points * rng.uniform(0.85, 1.15, (len(points), 1))
    ranges = RangeSet([RangeReading(points, "lidar")], cfg)
    _, fit = range_scaled(pred, into_cameras(ranges, FRAMES, tf.lookup), views=2)
    assert not fit.known, fit
    assert {"too_few": "fewer than metric.range_min_points", "another_scene": "agree on one scale",
            "noisy": "above metric.range_max_residual"}[case] in fit.reason


def test_a_rig_keeps_its_metres_and_the_fit_is_a_check():
    pred, tf = _scene()
    rig_pred = Prediction(pred.depth * 1.1, True, pred.K_proc, "camera", pred.confidence, scale_source="rig",
                          scale_raw=1.1)
    ranges = RangeSet([RangeReading(_returns(pred, tf, S_TRUE), "lidar")], RangeFitConfig())
    out, fit = range_scaled(rig_pred, into_cameras(ranges, FRAMES, tf.lookup), views=2)
    assert out is rig_pred and fit.check_of == "rig" and fit.versus == pytest.approx(S_TRUE / 1.1, rel=1e-6)


def test_range_metres_replace_a_metric_model_s_and_say_how_far_apart_they_were():
    pred, tf = _scene()
    model = Prediction(pred.depth * 3.0, True, pred.K_proc, "camera", pred.confidence, scale_source="metric_model",
                       scale_raw=3.0)
    ranges = RangeSet([RangeReading(_returns(pred, tf, S_TRUE), "lidar")], RangeFitConfig())
    out, fit = range_scaled(model, into_cameras(ranges, FRAMES, tf.lookup), views=2)
    assert fit.versus == pytest.approx(S_TRUE / 3.0, rel=1e-6)
    assert out.scale_source == "range" and out.scale_raw == pytest.approx(S_TRUE, rel=1e-6)
    np.testing.assert_allclose(out.depth, pred.depth * S_TRUE, rtol=1e-5)


def test_only_the_set_s_own_views_are_fitted():
    """A temporal window's keyframes (views beyond the set's) never pair with this set's returns."""
    pred, tf = _scene()
    cam0 = geo.transform_points(tf.lookup("lidar", FRAMES[0]), geo.backproject(pred.depth[0] * S_TRUE,
                                                                              pred.K_of(0))[0])
    wrong = Prediction(np.stack([pred.depth[0], pred.depth[0] * 5]), False, pred.K_proc, "camera", pred.confidence)
    tf.add("base", FRAMES[1], tf.lookup("base", FRAMES[0]))  # both views look at the same points
    ranges = RangeSet([RangeReading(cam0.astype(np.float64), "lidar")], RangeFitConfig())
    _, fit = range_scaled(wrong, into_cameras(ranges, FRAMES, tf.lookup), views=1)
    assert fit.scale == pytest.approx(S_TRUE, rel=1e-6)


def test_each_topic_gives_its_message_nearest_the_set_within_the_slop():
    latest: LatestByStamp[str] = LatestByStamp(2)
    assert latest.pick(1000, 50)[2] == "no range message received yet"
    for stamp, item in ((900, "a0"), (990, "a1"), (1100, "a2")):
        latest.add(0, stamp, item)
    latest.add(1, 700, "b0")
    chosen, offset_s, problem = latest.pick(1000, 50)
    assert chosen == [(0, "a1")] and offset_s == pytest.approx(10e-9) and problem == ""
    chosen, offset_s, problem = latest.pick(2000, 50)
    assert chosen == [] and "metric.range_slop_s" in problem and latest.stale == 1


def test_range_topic_entries_name_their_kind():
    sources = parse_range_topics(["cloud:/velodyne_points", "scan:scan", "depth:/cam/depth/image_rect_raw"])
    assert [s.kind for s in sources] == [RangeKind.CLOUD, RangeKind.SCAN, RangeKind.DEPTH]
    assert sources[2].info_topic == "/cam/depth/camera_info" and sources[1].info_topic == "camera_info"
    for bad in (["/velodyne_points"], ["lidar:/points"], ["cloud:"], ["scan:/a", "cloud:/a"]):
        with pytest.raises(ConfigError, match="metric.range_topics"):
            parse_range_topics(bad)


def test_fit_parameters_are_checked():
    with pytest.raises(ConfigError, match="metric.range_min_points"):
        RangeFitConfig(min_points=2)
    with pytest.raises(ConfigError, match="metric.range_slop_s"):
        RangeFitConfig(slop_s=0.0)
    fit = fit_scale(np.ones(5), np.ones(5) * 2, np.ones(5), RangeFitConfig(min_points=3))
    assert fit.scale == pytest.approx(2.0)
