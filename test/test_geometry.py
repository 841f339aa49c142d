"""Rigid transforms, quaternions, back-projection and fusion: exact where exact, tight tolerances else."""
import subprocess
import sys

import numpy as np
import pytest

from da3_ros.core import geometry as g


def _random_R(rng, n=None):
    q = rng.normal(size=(4,) if n is None else (n, 4))
    return g.R_from_quaternion(q)


def _random_T(rng, n):
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = _random_R(rng, n)
    T[:, :3, 3] = rng.normal(scale=3.0, size=(n, 3))
    return T


def _axis_angle_R(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    A = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * A + (1 - np.cos(angle)) * A @ A  # Rodrigues


def _project(points, K):
    X, Y, Z = points.astype(np.float64).T
    return np.stack([K[1, 1] * Y / Z + K[1, 2], (K[0, 0] * X + K[0, 1] * Y) / Z + K[0, 2]], axis=1)  # (v, u)


K_SKEW = np.array([[410.0, 2.5, 251.3], [0.0, 405.5, 167.8], [0.0, 0.0, 1.0]])


def test_geometry_imports_no_ros():
    code = ("import sys, da3_ros.core.geometry; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'sensor_msgs', 'geometry_msgs', 'std_msgs', 'builtin_interfaces', 'tf2_msgs')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_invert_T_is_rigid_inverse():
    rng = np.random.default_rng(0)
    T = _random_T(rng, 5)
    T_inv = g.invert_T(T)
    assert T_inv.shape == (5, 4, 4)
    np.testing.assert_allclose(T_inv @ T, np.tile(np.eye(4), (5, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(T_inv, np.linalg.inv(T), atol=1e-12)
    assert np.array_equal(T_inv[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (5, 1)))
    # the rotation part is the exact transpose, not a numerical inverse
    assert np.array_equal(T_inv[:, :3, :3], np.swapaxes(T[:, :3, :3], 1, 2))
    with pytest.raises(ValueError):
        g.invert_T(np.eye(3))


def test_relative_poses_reference_identity_and_chains():
    rng = np.random.default_rng(1)
    T_cam_world = _random_T(rng, 4)
    for ref in range(4):
        T_ref_cam = g.relative_poses(T_cam_world, ref)
        assert np.array_equal(T_ref_cam[ref], np.eye(4))
        # each pose maps the camera's points to where the world says they are in the reference
        np.testing.assert_allclose(T_ref_cam @ T_cam_world, np.broadcast_to(T_cam_world[ref], (4, 4, 4)),
                                   atol=1e-12)
    T_0 = g.relative_poses(T_cam_world, 0)
    T_2 = g.relative_poses(T_cam_world, 2)
    for b in range(4):  # T_0_b = T_0_2 @ T_2_b
        np.testing.assert_allclose(T_0[2] @ T_2[b], T_0[b], atol=1e-12)
    # independent of the world frame: re-anchoring every camera on a common world change leaves them alone
    T_world_other = _random_T(rng, 1)[0]
    np.testing.assert_allclose(g.relative_poses(T_cam_world @ T_world_other, 0), T_0, atol=1e-12)
    with pytest.raises(ValueError):
        g.relative_poses(T_cam_world, 4)


def test_quaternion_known_values():
    assert np.array_equal(g.quaternion_from_R(np.eye(3)), [0.0, 0.0, 0.0, 1.0])
    s = np.sqrt(0.5)
    np.testing.assert_allclose(g.quaternion_from_R(_axis_angle_R([0, 0, 1], np.pi / 2)), [0, 0, s, s],
                               atol=1e-15)
    np.testing.assert_allclose(g.quaternion_from_R(np.diag([1.0, -1.0, -1.0])), [1, 0, 0, 0], atol=1e-15)
    np.testing.assert_allclose(g.R_from_quaternion([0, 0, 1, 0]), np.diag([-1.0, -1.0, 1.0]), atol=1e-15)
    # x forward camera axes: optical z = body x, optical x = -body y, optical y = -body z
    R_body_optical = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    np.testing.assert_allclose(g.quaternion_from_R(R_body_optical), [-0.5, 0.5, -0.5, 0.5], atol=1e-15)


def test_quaternion_round_trips_random_and_half_turns():
    rng = np.random.default_rng(2)
    Rs = [_random_R(rng) for _ in range(200)]
    Rs += [_axis_angle_R(a, np.pi) for a in np.eye(3)]
    Rs += [_axis_angle_R(rng.normal(size=3), np.pi) for _ in range(50)]
    Rs += [_axis_angle_R(rng.normal(size=3), np.pi - 1e-9) for _ in range(10)]
    Rs += [_axis_angle_R(rng.normal(size=3), 1e-9) for _ in range(10)]
    for R in Rs:
        q = g.quaternion_from_R(R)
        assert q.shape == (4,) and q[3] >= 0
        assert abs(np.linalg.norm(q) - 1) < 1e-15
        np.testing.assert_allclose(g.R_from_quaternion(q), R, atol=1e-12)
    # batched equals one by one
    batch = np.stack(Rs)
    np.testing.assert_allclose(g.quaternion_from_R(batch), [g.quaternion_from_R(R) for R in Rs], atol=0)
    # q -> R -> q returns q up to the sign fixed by w >= 0
    q = rng.normal(size=(100, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.sign(q[:, 3:])
    np.testing.assert_allclose(g.quaternion_from_R(g.R_from_quaternion(q)), q, atol=1e-12)


def test_quaternion_of_non_orthonormal_R_is_of_nearest_rotation():
    rng = np.random.default_rng(3)
    for _ in range(20):
        R = _random_R(rng)
        noisy = R + rng.normal(scale=1e-3, size=(3, 3))
        R_fit = g.nearest_rotation(noisy)
        np.testing.assert_allclose(R_fit @ R_fit.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(R_fit), 1.0)
        np.testing.assert_allclose(g.R_from_quaternion(g.quaternion_from_R(noisy)), R_fit, atol=1e-12)
        np.testing.assert_allclose(R_fit, R, atol=1e-2)
        # scaled matrices (e.g. a network's pose with a scale folded in) have the same rotation
        np.testing.assert_allclose(g.quaternion_from_R(2.5 * R), g.quaternion_from_R(R), atol=1e-12)
    # a reflection is projected onto a proper rotation, never returned as one
    assert np.isclose(np.linalg.det(g.nearest_rotation(np.diag([1.0, 1.0, -1.0]))), 1.0)
    with pytest.raises(ValueError):
        g.R_from_quaternion([0.0, 0.0, 0.0, 0.0])


def test_valid_mask_criteria():
    depth = np.array([[1.0, np.nan, np.inf, -1.0, 0.0], [0.5, 2.0, 9.0, 3.0, 4.0]], np.float32)
    conf = np.array([[9.0, 9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 0.5, np.nan]], np.float32)
    sky = np.zeros_like(depth, bool)
    sky[1, 1] = True
    assert np.array_equal(g.valid_mask(depth), [[1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    in_range = g.valid_mask(depth, min_depth=0.8, max_depth=5.0)
    assert np.array_equal(in_range, [[1, 0, 0, 0, 0], [0, 1, 0, 1, 1]])
    assert np.array_equal(g.valid_mask(depth, conf, min_confidence=1.0), [[1, 0, 0, 0, 0], [1, 1, 1, 0, 0]])
    assert np.array_equal(g.valid_mask(depth, conf), g.valid_mask(depth))  # no threshold, no filter
    assert np.array_equal(g.valid_mask(depth, sky_mask=sky), [[1, 0, 0, 0, 0], [1, 0, 1, 1, 1]])
    with pytest.raises(ValueError):
        g.valid_mask(depth, sky_mask=sky[:, :3])


@pytest.mark.parametrize("K", [K_SKEW, np.array([[300.0, 0.0, 160.0], [0.0, 300.0, 120.0], [0, 0, 1.0]])])
def test_backproject_then_project_returns_pixels_and_depth(K):
    rng = np.random.default_rng(4)
    H, W = 240, 320
    depth = rng.uniform(0.3, 80.0, size=(H, W)).astype(np.float32)
    points, pixels = g.backproject(depth, K)
    assert points.dtype == np.float32 and pixels.dtype == np.int32
    assert points.shape == (H * W, 3) and pixels.shape == (H * W, 2)
    vv, uu = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    assert np.array_equal(pixels, np.stack([vv.ravel(), uu.ravel()], 1))  # row-major, (v, u)
    assert np.array_equal(points[:, 2], depth.ravel())
    np.testing.assert_allclose(_project(points, K), pixels, atol=2e-3)


def test_backproject_stride_and_mask():
    rng = np.random.default_rng(5)
    H, W = 101, 67
    depth = rng.uniform(1.0, 5.0, size=(H, W)).astype(np.float32)
    depth[3, 4] = np.nan
    depth[10, 10] = 0.0
    depth[20, 4] = -np.inf
    full_pts, full_pix = g.backproject(depth, K_SKEW)
    assert len(full_pts) == H * W - 3
    assert not np.any((full_pix == [3, 4]).all(1) | (full_pix == [10, 10]).all(1))
    assert np.isfinite(full_pts).all()

    pts, pix = g.backproject(depth, K_SKEW, stride=4)
    assert np.all(pix % 4 == 0)
    assert len(pts) == len(range(0, H, 4)) * len(range(0, W, 4)) - 1  # (20, 4) is on the grid and invalid
    # a strided point is exactly the full-resolution point of the same pixel
    index = {tuple(p): i for i, p in enumerate(full_pix)}
    assert np.array_equal(pts, full_pts[[index[tuple(p)] for p in pix]])

    mask = np.zeros((H, W), bool)
    mask[50:60, 30:33] = True
    mask[0, 0] = True
    pts, pix = g.backproject(depth, K_SKEW, mask)
    assert len(pts) == 31
    assert mask[pix[:, 0], pix[:, 1]].all()
    assert np.array_equal(pts[:, 2], depth[mask])
    _, pix2 = g.backproject(depth, K_SKEW, mask, stride=2)
    assert np.array_equal(pix2, [[0, 0]] + [[v, u] for v in (50, 52, 54, 56, 58) for u in (30, 32)])
    with pytest.raises(ValueError):
        g.backproject(depth, K_SKEW, stride=0)
    with pytest.raises(ValueError):
        g.backproject(depth, K_SKEW, mask[:-1])


def test_backproject_network_size_is_vectorised():
    # a 504x336 map comes out whole and consistent (the implementation has no per-pixel Python loop)
    depth = np.full((336, 504), 2.0, np.float32)
    points, pixels = g.backproject(depth, K_SKEW)
    assert points.shape == (336 * 504, 3)
    np.testing.assert_allclose(_project(points, K_SKEW), pixels, atol=1e-3)


def test_transform_points_matches_homogeneous_product():
    rng = np.random.default_rng(6)
    T = _random_T(rng, 1)[0]
    p = rng.normal(size=(50, 3)).astype(np.float32)
    out = g.transform_points(T, p)
    assert out.dtype == np.float32 and out.shape == (50, 3)
    expected = (T @ np.c_[p, np.ones(50)].T).T[:, :3]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.array_equal(g.transform_points(np.eye(4), p), p)


def test_fuse_views_brings_views_into_the_reference_frame():
    rng = np.random.default_rng(7)
    P_world = rng.uniform(-2, 2, size=(30, 3))
    T_cam_world = _random_T(rng, 3)
    per_view = [g.transform_points(T, P_world) for T in T_cam_world]
    colors = [np.full((30, 3), 10 * (i + 1), np.uint8) for i in range(3)]
    T_ref_cam = g.relative_poses(T_cam_world, 1)
    points, fused_colors = g.fuse_views(per_view, T_ref_cam, colors)
    expected = g.transform_points(T_cam_world[1], P_world)
    assert points.shape == (90, 3) and points.dtype == np.float32
    for i in range(3):
        np.testing.assert_allclose(points[30 * i:30 * (i + 1)], expected, atol=1e-4)
    assert np.array_equal(fused_colors[:, 0], np.repeat([10, 20, 30], 30))
    only_points, none = g.fuse_views(per_view[:2], T_ref_cam[:2])
    assert none is None and np.array_equal(only_points, points[:60])
    empty, empty_colors = g.fuse_views([], np.zeros((0, 4, 4)), [])
    assert empty.shape == (0, 3) and empty_colors.shape == (0, 3)
    with pytest.raises(ValueError):
        g.fuse_views(per_view, T_ref_cam[:2])
    with pytest.raises(ValueError):
        g.fuse_views(per_view, T_ref_cam, colors[:2])


def test_sample_colors():
    rng = np.random.default_rng(8)
    rgb = rng.integers(0, 256, size=(12, 9, 3), dtype=np.uint8)
    depth = np.ones((12, 9), np.float32)
    _, pixels = g.backproject(depth, K_SKEW, stride=3)
    colors = g.sample_colors(rgb, pixels)
    assert colors.dtype == np.uint8
    assert np.array_equal(colors, rgb[::3, ::3].reshape(-1, 3))
