"""Rigid transforms, quaternions, back-projection and point fusion in plain numpy (no ROS imports).

Frames are OpenCV / ROS optical frames (x right, y down, z forward, REP 103). ``T_a_b`` is the 4x4 pose of
frame b in frame a: it maps points from b to a, ``p_a = T_a_b @ p_b``. Pixel centres are at integers; pixel
index arrays are (v, u) = (row, column). Quaternions are (x, y, z, w) as in geometry_msgs.
"""
from __future__ import annotations

import math

import numpy as np


def _check_T(T: np.ndarray, name: str = "T") -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape[-2:] != (4, 4):
        raise ValueError(f"{name} must have shape (..., 4, 4), got {T.shape}")
    return T


def invert_T(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms (..., 4, 4): [R | t]^-1 = [R^T | -R^T t] (float64).

    Uses the transpose, not a generic inverse, so the result is rigid again and the bottom row exact.
    """
    T = _check_T(T)
    R_inv = np.swapaxes(T[..., :3, :3], -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = R_inv
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", R_inv, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def relative_poses(T_cam_world: np.ndarray, ref: int) -> np.ndarray:
    """World-to-camera poses (N, 4, 4) -> T_ref_cam (N, 4, 4), every camera's pose in camera ``ref``.

    ``T_ref_cam[i] = T_ref_world @ inv(T_cam_world[i])``; entry ``ref`` is exactly the identity.
    """
    T_cam_world = _check_T(T_cam_world, "T_cam_world")
    if T_cam_world.ndim != 3:
        raise ValueError(f"T_cam_world must have shape (N, 4, 4), got {T_cam_world.shape}")
    n = T_cam_world.shape[0]
    if not 0 <= ref < n:
        raise ValueError(f"reference view {ref} is out of range for {n} views")
    T_ref_cam = T_cam_world[ref] @ invert_T(T_cam_world)
    T_ref_cam[ref] = np.eye(4)  # no rounding residue on the reference itself
    return T_ref_cam


def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """Project (..., 3, 3) matrices onto the nearest rotation (Frobenius norm) via SVD (float64)."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"R must have shape (..., 3, 3), got {R.shape}")
    U, _, Vt = np.linalg.svd(R)
    # Flip the weakest singular direction where needed so that det = +1 (a rotation, not a reflection).
    d = np.sign(np.linalg.det(U @ Vt))
    d = np.where(d == 0, 1.0, d)
    U = U.copy()
    U[..., :, 2] *= d[..., None]
    return U @ Vt


def quaternion_from_R(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as (x, y, z, w) with w >= 0.

    R is first projected onto the nearest rotation, so slightly non-orthonormal network output is fine.
    Robust for every angle including 180 degrees: of the rows of 4 q q^T (whose entries are all linear
    in R), the one with the largest diagonal entry is divided by its norm, never by a small number.
    """
    R = nearest_rotation(R)
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    xx = 1.0 + 2.0 * m[..., 0, 0] - tr
    yy = 1.0 + 2.0 * m[..., 1, 1] - tr
    zz = 1.0 + 2.0 * m[..., 2, 2] - tr
    ww = 1.0 + tr
    xy, xz, yz = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]
    wx, wy, wz = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    Q = np.stack([np.stack([xx, xy, xz, wx], -1), np.stack([xy, yy, yz, wy], -1),
                  np.stack([xz, yz, zz, wz], -1), np.stack([wx, wy, wz, ww], -1)], -2)  # = 4 q q^T
    best = np.argmax(np.stack([xx, yy, zz, ww], -1), axis=-1)
    q = np.take_along_axis(Q, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def R_from_quaternion(q: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) as (x, y, z, w), normalised first -> rotation matrices (..., 3, 3) float64."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"q must have shape (..., 4), got {q.shape}")
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n == 0) or not np.all(np.isfinite(n)):
        raise ValueError("quaternion must be finite and non-zero")
    x, y, z, w = np.moveaxis(q / n, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def intrinsics_problem(K: np.ndarray) -> str:
    """'' for a usable pinhole K (3x3, pixels), else what is wrong (all zero: uncalibrated; not finite; f <= 0)."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        return f"K must be 3x3, got shape {K.shape}"
    if not np.any(K):
        return "an all-zero K (uncalibrated)"
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        return f"an invalid K: {K.ravel().tolist()}"
    return ""


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """Where a depth value means a distance: finite and > 0 (NaN, +-Inf, 0 and negatives are not)."""
    depth = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > 0)


def valid_mask(depth: np.ndarray, confidence: np.ndarray | None = None, sky_mask: np.ndarray | None = None,
               min_confidence: float | None = None, min_depth: float | None = None,
               max_depth: float | None = None) -> np.ndarray:
    """Pixels with a usable depth: finite, > 0, in [min_depth, max_depth], confidence >= min, not sky.

    Each criterion applies only when its argument is given; ``min_confidence`` is ignored without a
    ``confidence`` map (not every model outputs one). Works on any shape, e.g. (H, W) or (N, H, W).
    """
    depth = np.asarray(depth)
    m = valid_depth(depth)
    with np.errstate(invalid="ignore"):
        if min_depth is not None:
            m &= depth >= min_depth
        if max_depth is not None:
            m &= depth <= max_depth
        if confidence is not None and min_confidence is not None:
            confidence = np.asarray(confidence)
            if confidence.shape != depth.shape:
                raise ValueError(f"confidence is {confidence.shape}, depth is {depth.shape}")
            m &= confidence >= min_confidence
    if sky_mask is not None:
        sky_mask = np.asarray(sky_mask, dtype=bool)
        if sky_mask.shape != depth.shape:
            raise ValueError(f"sky_mask is {sky_mask.shape}, depth is {depth.shape}")
        m &= ~sky_mask
    return m


def backproject(depth: np.ndarray, K: np.ndarray, mask: np.ndarray | None = None,
                stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Lift a depth image to 3-D points in its camera's optical frame.

    depth: (H, W) z-depth; K: (3, 3) intrinsics of that image (skew ``K[0, 1]`` honoured); mask: (H, W)
    bool of pixels to keep, by default ``valid_mask(depth)`` (a given mask is used as is, so it should
    exclude non-finite depth); stride: keep rows and columns 0, stride, 2*stride, ...
    Returns points (M, 3) float32 and their pixels (M, 2) int32 as (v, u) in the full image, row-major.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {K.shape}")
    fx, s, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    if not (fx != 0 and fy != 0 and np.all(np.isfinite(K))):
        raise ValueError(f"K must be finite with non-zero focal lengths, got fx={fx}, fy={fy}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    stride = int(stride)
    if mask is None:
        mask = valid_mask(depth)
    elif mask.shape != depth.shape:
        raise ValueError(f"mask is {mask.shape}, depth is {depth.shape}")
    d = depth[::stride, ::stride]
    vi, ui = np.nonzero(mask[::stride, ::stride])
    z = d[vi, ui].astype(np.float32)
    v, u = vi * stride, ui * stride
    # Per-row and per-column factors in float64 (only H + W of them), so the per-point work is a gather
    # and two float32 multiplies: X = ((u - cx)/fx - s (v - cy)/(fx fy)) z, Y = (v - cy)/fy z.
    y_row = (np.arange(0, depth.shape[0], stride) - cy) / fy
    x_col = ((np.arange(0, depth.shape[1], stride) - cx) / fx).astype(np.float32)
    x_row = (-s / fx * y_row).astype(np.float32)
    points = np.empty((z.size, 3), dtype=np.float32)
    points[:, 0] = (x_col[ui] + x_row[vi]) * z
    points[:, 1] = y_row.astype(np.float32)[vi] * z
    points[:, 2] = z
    return points, np.stack([v, u], axis=1).astype(np.int32)


def transform_points(T_a_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Map points (M, 3) from frame b to frame a with ``T_a_b`` (4, 4); float32 out."""
    T_a_b = _check_T(T_a_b, "T_a_b")
    if T_a_b.shape != (4, 4):
        raise ValueError(f"T_a_b must be (4, 4), got {T_a_b.shape}")
    points_b = np.asarray(points_b)
    if points_b.ndim != 2 or points_b.shape[1] != 3:
        raise ValueError(f"points must be (M, 3), got {points_b.shape}")
    R, t = T_a_b[:3, :3].astype(np.float32), T_a_b[:3, 3].astype(np.float32)
    return points_b.astype(np.float32, copy=False) @ R.T + t


def fuse_views(points_per_view: list[np.ndarray], T_target_cam: np.ndarray,
               colors_per_view: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Concatenate N views' points (each (M_i, 3) in its camera frame) in one target frame.

    ``T_target_cam[i]`` is camera i's pose in the target frame (e.g. from ``relative_poses``).
    Returns points (M, 3) float32 and, if colours (each (M_i, 3) uint8) were given, their concatenation
    in the same order (else None).
    """
    T_target_cam = _check_T(T_target_cam, "T_target_cam")
    n = len(points_per_view)
    if T_target_cam.shape != (n, 4, 4):
        raise ValueError(f"{n} views need T_target_cam of shape ({n}, 4, 4), got {T_target_cam.shape}")
    if colors_per_view is not None:
        if len(colors_per_view) != n:
            raise ValueError(f"{n} views of points but {len(colors_per_view)} of colours")
        for i, (p, c) in enumerate(zip(points_per_view, colors_per_view)):
            if len(c) != len(p):
                raise ValueError(f"view {i}: {len(p)} points but {len(c)} colours")
    if n == 0:
        return np.zeros((0, 3), np.float32), None if colors_per_view is None else np.zeros((0, 3), np.uint8)
    points = np.concatenate([transform_points(T, p) for T, p in zip(T_target_cam, points_per_view)])
    if colors_per_view is None:
        return points, None
    return points, np.concatenate([np.asarray(c, dtype=np.uint8).reshape(-1, 3) for c in colors_per_view])


def sample_colors(rgb_proc: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Colours (M, 3) uint8 of an (H, W, 3) uint8 image at pixels (M, 2) given as (v, u)."""
    rgb_proc = np.asarray(rgb_proc)
    if rgb_proc.ndim != 3 or rgb_proc.shape[2] != 3 or rgb_proc.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got shape {rgb_proc.shape} dtype {rgb_proc.dtype}")
    pixels = np.asarray(pixels)
    return rgb_proc[pixels[:, 0], pixels[:, 1]]


def pinhole_K(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """A centred pinhole camera of ``width`` x ``height`` pixels with the given horizontal field of view."""
    if not 0 < hfov_deg < 180:
        raise ValueError(f"hfov_deg must be in (0, 180) degrees, got {hfov_deg}")
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
