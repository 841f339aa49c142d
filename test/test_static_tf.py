"""The static transform tree used for pose conditioning from /tf_static."""
import numpy as np
import pytest

from da3_ros.core.geometry import R_from_quaternion, invert_T
from da3_ros.core.static_tf import StaticTfBuffer


def _T(seed):
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R_from_quaternion(rng.normal(size=4)), rng.normal(size=3)
    return T


def test_lookup_through_a_common_ancestor():
    buf = StaticTfBuffer()
    T_base_rig, T_rig_left, T_rig_right, T_left_lopt = _T(1), _T(2), _T(3), _T(4)
    buf.add("base_link", "rig", T_base_rig)
    buf.add("rig", "left", T_rig_left)
    buf.add("rig", "right", T_rig_right)
    buf.add("left", "left_optical", T_left_lopt)
    expected = invert_T(T_rig_left @ T_left_lopt) @ T_rig_right
    np.testing.assert_allclose(buf.lookup("left_optical", "right"), expected, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("right", "left_optical"), invert_T(expected), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("base_link", "left"), T_base_rig @ T_rig_left, atol=1e-12)
    assert np.array_equal(buf.lookup("left", "left"), np.eye(4))


def test_unconnected_frames_and_updates():
    buf = StaticTfBuffer()
    buf.add("a", "b", _T(1))
    buf.add("c", "d", _T(2))
    assert buf.lookup("b", "d") is None and buf.lookup("b", "unknown") is None
    buf.add("a", "b", _T(5))  # re-published static transform replaces the old one
    np.testing.assert_allclose(buf.lookup("a", "b"), _T(5))
    buf.add("b", "a", _T(6))  # a cycle must not hang the lookup
    assert buf.lookup("a", "d") is None
    with pytest.raises(ValueError):
        buf.add("x", "x", np.eye(4))


def _yaw_T(deg: float, x: float) -> np.ndarray:
    a = np.radians(deg)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    T[0, 3] = x
    return T


def test_timed_edges_are_looked_up_at_a_stamp_interpolated_never_extrapolated():
    """/tf edges (a range sensor moving against the cameras): exact at a sample, slerp between, a static edge wins."""
    from da3_ros.core.static_tf import TfBuffer

    buf = TfBuffer(keep_s=1.0, tolerance_s=0.05)
    buf.add("base", "cam", _T(7))
    for k in range(5):  # base -> lidar turning 10 degrees and moving 0.1 m per 100 ms
        buf.add_timed("base", "lidar", _yaw_T(10.0 * k, 0.1 * k), k * 100_000_000)
    T_base_cam = _T(7)
    np.testing.assert_allclose(buf.lookup("cam", "lidar", 200_000_000), invert_T(T_base_cam) @ _yaw_T(20, 0.2),
                               atol=1e-12)
    np.testing.assert_allclose(buf.lookup("cam", "lidar", 250_000_000), invert_T(T_base_cam) @ _yaw_T(25, 0.25),
                               atol=1e-9)  # halfway: half the turn, half the way
    np.testing.assert_allclose(buf.lookup("base", "lidar", 430_000_000), _yaw_T(40, 0.4), atol=1e-12)  # held
    assert buf.lookup("cam", "lidar", 500_000_000) is None  # 100 ms past the last sample: no extrapolation
    assert buf.lookup("cam", "lidar") is None  # without a stamp only static edges hold (rig extrinsics, nav)
    buf.add("base", "lidar", _yaw_T(90, 0.0))  # a static mount for the same child wins
    np.testing.assert_allclose(buf.lookup("base", "lidar", 250_000_000), _yaw_T(90, 0.0), atol=1e-12)


def test_timed_edges_keep_a_window_and_restart_when_time_goes_back():
    from da3_ros.core.static_tf import TfBuffer

    buf = TfBuffer(keep_s=0.5, tolerance_s=0.0)
    for k in range(20):
        buf.add_timed("odom", "base", _yaw_T(k, 0.0), k * 100_000_000)
    assert buf.lookup("odom", "base", 1_000_000_000) is None  # forgotten: older than keep_s before the newest
    np.testing.assert_allclose(buf.lookup("odom", "base", 1_500_000_000), _yaw_T(15, 0.0), atol=1e-12)
    buf.add_timed("odom", "base", _yaw_T(0, 0.0), 0)  # a bag replayed from its start: the old samples go
    assert buf.lookup("odom", "base", 1_500_000_000) is None
    np.testing.assert_allclose(buf.lookup("odom", "base", 0), np.eye(4), atol=1e-12)
    with pytest.raises(ValueError):
        buf.add_timed("base", "base", np.eye(4), 1)
