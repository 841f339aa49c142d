"""Cost of the range scale per set (issue 27): a 64-beam LiDAR cloud into a 3-camera rig at 504x280.

A 64-beam spinning LiDAR (2048 columns x 64 beams = 131 072 returns, vertical field -16.6..+16.6 degrees, the
Ouster OS1-64's layout) 0.3 m above three cameras (front, left, right, yawed 0/+60/-60 degrees) in an analytic
room: floor, walls 4-6 m away, a box. Each camera's depth is the room rendered exactly at 504x280, so the fit
must return the scale the returns were made with. Timed per set, as the node's worker runs it:
  convert: the PointCloud2 message -> points (``ros.conversions.ranges.range_points``);
  fit: returns into each camera through TF, projection, z-buffer, the robust fit (``into_cameras`` +
       ``range_scaled``).
Median and spread of 30 sets; the target is <= 5 ms for the fit. Run:
  source scripts/env.sh && python benchmarks/bench_range.py
"""
from __future__ import annotations

import math
import statistics
import sys
import time

import numpy as np
from std_msgs.msg import Header

from da3_ros.core.prediction import Prediction
from da3_ros.core.range_scale import RangeFitConfig, RangeKind, RangeReading, RangeSet, into_cameras, range_scaled
from da3_ros.core.static_tf import StaticTfBuffer
from da3_ros.ros import conversions as conv
from da3_ros.ros.conversions.ranges import range_points

H, W = 280, 504
K = np.array([[250.0, 0, 251.5], [0, 250.0, 139.5], [0, 0, 1]])
R_OPTICAL = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # optical (z ahead) in a robot frame (x ahead, z up)
SCALE = 0.37  # the network's units -> metres


def _yaw(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def _room_range(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance along unit rays from ``origin`` (base_link, z up) to the floor, the walls or a box."""
    t = np.full(len(dirs), np.inf)
    down = dirs[:, 2] < -1e-9
    t[down] = -origin[2] / dirs[down, 2]
    for axis, wall in ((0, 6.0), (0, -5.0), (1, 4.0), (1, -4.5)):
        d = dirs[:, axis]
        hit = (d * wall > 0) & (np.abs(d) > 1e-9)
        t[hit] = np.minimum(t[hit], (wall - origin[axis]) / d[hit])
    box_x = 2.5  # a box front face at x = 2.5 m, |y| < 0.5, z < 0.8
    d = dirs[:, 0]
    fwd = d > 1e-9
    tb = np.where(fwd, (box_x - origin[0]) / np.where(fwd, d, 1), np.inf)
    p = origin + tb[:, None] * dirs
    on_box = fwd & (np.abs(p[:, 1]) < 0.5) & (p[:, 2] < 0.8) & (p[:, 2] > 0)
    t[on_box] = np.minimum(t[on_box], tb[on_box])
    return t


def scene() -> tuple[Prediction, StaticTfBuffer, np.ndarray, list[str]]:
    tf, frames, depths = StaticTfBuffer(), [], []
    v, u = np.mgrid[0:H, 0:W]
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((H, W))], -1).reshape(-1, 3)
    for name, yaw in (("front", 0.0), ("left", 60.0), ("right", -60.0)):
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = _yaw(yaw) @ R_OPTICAL, [0.0, 0.0, 1.0]
        frame = f"{name}_optical_frame"
        tf.add("base_link", frame, T)
        frames.append(frame)
        dirs = rays_cam @ T[:3, :3].T
        norm = np.linalg.norm(dirs, axis=1)
        depths.append((_room_range(T[:3, 3], dirs / norm[:, None]) / norm).reshape(H, W) / SCALE)  # z, net units
    T_lidar = np.eye(4)
    T_lidar[:3, 3] = [0.0, 0.0, 1.3]
    tf.add("base_link", "lidar", T_lidar)
    az = np.linspace(-math.pi, math.pi, 2048, endpoint=False)
    el = np.radians(np.linspace(-16.6, 16.6, 64))
    A, E = np.meshgrid(az, el)
    dirs = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], -1).reshape(-1, 3)
    r = _room_range(T_lidar[:3, 3], dirs)
    points = (dirs * r[:, None])[np.isfinite(r)]
    pred = Prediction(np.stack(depths).astype(np.float32), False, np.stack([K] * 3), "camera",
                      confidence=np.ones((3, H, W), np.float32))
    return pred, tf, points.astype(np.float32), frames


def main() -> int:
    pred, tf, points, frames = scene()
    cloud = conv.xyz_rgb_to_pointcloud2(points, Header(frame_id="lidar"))
    cfg = RangeFitConfig()
    convert_ms, fit_ms, fit = [], [], None
    for _ in range(30):
        t0 = time.perf_counter()
        xyz = range_points(RangeKind.CLOUD, cloud)
        t1 = time.perf_counter()
        ranges = into_cameras(RangeSet([RangeReading(xyz, "lidar")], cfg), frames, tf.lookup)
        _, fit = range_scaled(pred, ranges, views=3)
        t2 = time.perf_counter()
        convert_ms.append((t1 - t0) * 1e3)
        fit_ms.append((t2 - t1) * 1e3)
    assert fit is not None and abs(fit.scale - SCALE) < 1e-4 * SCALE, fit

    def spread(x: list[float]) -> str:
        return f"{statistics.median(x):.2f} ({min(x):.2f}-{max(x):.2f})"

    print(f"{len(points)} returns, 3 views {W}x{H}; fit scale {fit.scale:.6f} (true {SCALE}), "
          f"{fit.points} returns on pixels, {fit.inliers} inliers, residual {fit.residual:.2e}")
    print("| returns | on pixels | inliers | convert ms | fit ms |")
    print("|---|---|---|---|---|")
    print(f"| {len(points)} | {fit.points} | {fit.inliers} | {spread(convert_ms)} | {spread(fit_ms)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
