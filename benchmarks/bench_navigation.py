"""Cost of points_obstacles + scan per set: 3 views at 504x280, cloud stride 2, an analytic indoor scene.

Three cameras 1 m up (front, left, right, yawed by 0/+60/-60 degrees, pitched down 15 degrees) see a floor,
a box and walls; their depth is rendered exactly, then timed through SetResult / SetMessages as the node runs it:
  back-projection (what the per-camera clouds would cost anyway) and the navigation stage alone
  (transform to base_link, height band, ground, voxels, isolated points, scan).
Run: source scripts/env.sh && python benchmarks/bench_navigation.py
"""
from __future__ import annotations

import math
import statistics
import sys
import time

import numpy as np
from std_msgs.msg import Header

from da3_ros.core import navigation as nav
from da3_ros.core.config import OutputConfig
from da3_ros.core.results import NavInputs, SetResult
from da3_ros.ros.messages import SetMessages
from da3_ros.core.prediction import Prediction
from da3_ros.core.rig import RigResult

H, W = 280, 504
K = np.array([[250.0, 0, 251.5], [0, 250.0, 139.5], [0, 0, 1]])
R_OPTICAL = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])


def _rot(yaw, pitch):
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    return Rz @ Ry @ R_OPTICAL


def render(T):
    """Depth of a room: floor z=0, walls at |x|=4 and |y|=3, a 0.4 m box 2 m ahead."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1) @ T[:3, :3].T
    c = T[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = [np.where(d[..., 2] < 0, -c[2] / d[..., 2], np.inf)]
        for axis, bound in ((0, 4.0), (1, 3.0)):
            for sign in (1, -1):
                t = (sign * bound - c[axis]) / d[..., axis]
                ts.append(np.where(t > 0, t, np.inf))
        lo, hi = [(np.array(b) - c) / d for b in ([2.0, -0.2, 0.0], [2.4, 0.2, 0.4])]
        near, far = np.minimum(lo, hi).max(-1), np.maximum(lo, hi).min(-1)
        ts.append(np.where((near <= far) & (far > 0), near, np.inf))
    return np.min(ts, axis=0).astype(np.float32)


def main() -> int:
    mounts = []
    for yaw in (0.0, math.radians(60), math.radians(-60)):
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = _rot(yaw, math.radians(15)), [0.0, 0.0, 1.0]
        mounts.append(T)
    depth = np.stack([render(T) for T in mounts])
    conf = np.ones_like(depth)
    pred = Prediction(depth=depth, is_metric=True, K_proc=np.repeat(K[None], 3, 0), K_source="camera",
                      confidence=conf, rgb_proc=np.zeros((3, H, W, 3), np.uint8), T_cam_world=np.stack(mounts))
    result = RigResult(pred, 0, np.stack(mounts), conditioned=False)
    inputs = NavInputs("base_link", np.stack(mounts))
    names = ["front", "left", "right"]
    headers = [Header(frame_id=f"{n}_optical_frame") for n in names]
    backproject, nav_stage, sizes = [], [], None
    for _ in range(30):
        res = SetResult(result, names, [h.frame_id for h in headers], [0] * len(names), OutputConfig(stride=2),
                        "bench", [], inputs)
        out = SetMessages(res)
        t0 = time.perf_counter()
        clouds = [res.cloud_arrays(i) for i in range(3)]
        t1 = time.perf_counter()
        obstacles, scan = out.obstacles(), out.scan()
        t2 = time.perf_counter()
        backproject.append(t1 - t0)
        nav_stage.append(t2 - t1)
        sizes = (sum(len(c[0]) for c in clouds), obstacles.width, len(scan.ranges))
    ms = [1e3 * statistics.median(x) for x in (backproject, nav_stage)]
    print("# 3 views 504x280, stride 2, analytic room; median of 30 sets")
    print("| points in | obstacle points out | scan rays | back-projection ms | obstacles + scan ms | total ms |")
    print("|---|---|---|---|---|---|")
    print(f"| {sizes[0]} | {sizes[1]} | {sizes[2]} | {ms[0]:.1f} | {ms[1]:.1f} | {sum(ms):.1f} |")
    cfg = nav.ObstacleConfig()
    print(f"# ObstacleConfig defaults: voxel {cfg.voxel_m} m, isolated < {cfg.outlier_min_neighbours} neighbours in "
          f"{cfg.outlier_radius_m} m, height {cfg.min_height_m}..{cfg.max_height_m} m, ground {cfg.ground!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
