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
