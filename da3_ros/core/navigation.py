"""Navigation outputs from the fused depth: an obstacle cloud in the robot's frame and a LaserScan (numpy only).

A costmap wants obstacles, not a dense camera cloud: points are taken into the target frame (``base_link``,
x forward, y left, z up, REP 103), kept inside a height band above the ground (the target frame's z = 0, or
a ground plane fitted to the points when the robot's floor is not where its TF says), thinned to one point
per voxel and stripped of isolated points (flying pixels at depth edges). The scan takes, per ray, the
nearest of all the set's points (before thinning: a voxel's mean is farther than its nearest point, and
thinned points leave rays empty, which a costmap clears) within its own height band, like
pointcloud_to_laserscan. Everything is vectorised:
no per-point Python loops (see benchmarks/bench_navigation.py for its cost).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from da3_ros.core.errors import ConfigError

GROUND_MODES = ("plane", "z")


@dataclass(frozen=True)
class ObstacleConfig:
    """How the obstacle cloud is made; heights are above the ground, in metres."""

    min_height_m: float = 0.05  # below: ground (and its noise)
    max_height_m: float = 1.8  # above: overhangs the robot passes under
    ground: str = "z"  # "z": the target frame's z = 0 is the ground; "plane": fit it to the points
    voxel_m: float = 0.05  # one point per voxel; 0 = keep all points
    outlier_radius_m: float = 0.15  # a point needs ``outlier_min_neighbours`` others this close
    outlier_min_neighbours: int = 3  # 0 = keep isolated points
    max_range_m: float = 0.0  # horizontal distance from the target frame's origin; 0 = no limit

    def __post_init__(self) -> None:
        if self.ground not in GROUND_MODES:
            raise ConfigError(f"nav.ground must be one of {GROUND_MODES}, got {self.ground!r}")
        if not self.max_height_m > self.min_height_m:
            raise ConfigError(f"nav.max_height_m ({self.max_height_m}) must exceed nav.min_height_m "
                              f"({self.min_height_m})")
        if self.voxel_m < 0 or self.outlier_radius_m < 0 or self.outlier_min_neighbours < 0:
            raise ConfigError("nav.voxel_m, nav.outlier_radius_m and nav.outlier_min_neighbours must be >= 0")


@dataclass(frozen=True)
class ScanConfig:
    """The LaserScan's geometry (target frame, angles counter-clockwise from +x) and its height band (z).

    Rays at ``angle_min + i * angle_increment`` for i < num_bins, i.e. over [angle_min, angle_max); at most one
    full turn. The height band is the scan's own: it may be wider than the obstacle cloud's.
    """

    angle_min: float = -math.pi
    angle_max: float = math.pi
    angle_increment: float = math.pi / 360  # 0.5 degrees
    range_min: float = 0.1
    range_max: float = 20.0
    min_height_m: float = 0.05
    max_height_m: float = 1.8

    def __post_init__(self) -> None:
        if not (self.angle_max > self.angle_min and self.angle_increment > 0):
            raise ConfigError(f"scan angles need angle_max > angle_min and angle_increment > 0, got "
                              f"{self.angle_min}, {self.angle_max}, {self.angle_increment}")
        if not 0 <= self.range_min < self.range_max:
            raise ConfigError(f"scan ranges need 0 <= range_min < range_max, got {self.range_min}, {self.range_max}")
        if self.num_bins * self.angle_increment > 2.0 * math.pi + 0.5 * self.angle_increment:
            raise ConfigError(f"scan.angle_max - scan.angle_min ({self.angle_max - self.angle_min:.6g} rad) exceeds "
                              f"one turn: rays would repeat bearings; use at most 2 pi")
        if not self.max_height_m > self.min_height_m:
            raise ConfigError(f"scan.max_height_m ({self.max_height_m}) must exceed scan.min_height_m "
                              f"({self.min_height_m})")

    @property
    def num_bins(self) -> int:
        """Number of rays: (angle_max - angle_min) / angle_increment, rounded."""
        return int(round((self.angle_max - self.angle_min) / self.angle_increment))

    @property
    def full_turn(self) -> bool:
        """Whether the rays cover the whole circle (the bearings past the last ray belong to ray 0)."""
        return abs(self.num_bins * self.angle_increment - 2.0 * math.pi) < 0.5 * self.angle_increment


def transform_points(T_target_src: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """(M, 3) points from frame src to frame target (float32)."""
    T = np.asarray(T_target_src, dtype=np.float64)
    return (xyz.astype(np.float64) @ T[:3, :3].T + T[:3, 3]).astype(np.float32)


def fit_ground_plane(xyz: np.ndarray, max_tilt_deg: float = 25.0, inlier_m: float = 0.03, iterations: int = 128,
                     max_samples: int = 4000, seed: int = 0) -> tuple[np.ndarray, float] | None:
    """The dominant near-horizontal plane ``n . p + d = 0`` (n unit, pointing up: n_z > 0), by RANSAC.

    Candidate planes from random triples are scored all at once on a subsample (a matrix of distances, no
    Python loop over points); the best is refined by least squares on its inliers. None when no plane within
    ``max_tilt_deg`` of horizontal has at least 10 % of the points.
    """
    if len(xyz) < 3:
        return None
    rng = np.random.default_rng(seed)
    pts = xyz[rng.choice(len(xyz), min(max_samples, len(xyz)), replace=False)].astype(np.float64)
    tri = pts[rng.integers(0, len(pts), (iterations, 3))]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-9
    n, tri = n[ok] / norm[ok, None], tri[ok]
    n *= np.where(n[:, 2] < 0, -1.0, 1.0)[:, None]
    flat = n[:, 2] >= math.cos(math.radians(max_tilt_deg))
    if not flat.any():
        return None
    n, tri = n[flat], tri[flat]
    d = -np.einsum("ij,ij->i", n, tri[:, 0])
    inliers = np.abs(pts @ n.T + d) < inlier_m  # (samples, candidates)
    best = int(np.argmax(inliers.sum(0)))
    members = pts[inliers[:, best]]
    if len(members) < max(3, 0.1 * len(pts)):
        return None
    centre = members.mean(0)
    normal = np.linalg.svd(members - centre, full_matrices=False)[2][-1]  # least-squares normal
    normal *= 1.0 if normal[2] >= 0 else -1.0
    return normal, float(-normal @ centre)


def voxel_downsample(xyz: np.ndarray, voxel_m: float, values: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """One point per occupied voxel: the mean of its points (and of ``values``, e.g. confidence)."""
    if voxel_m <= 0 or len(xyz) == 0:
        return xyz, values
    _, inverse, counts = np.unique(_cell_keys(xyz, voxel_m), return_inverse=True, return_counts=True)
    mean = np.stack([np.bincount(inverse, xyz[:, k], len(counts)) for k in range(3)], 1) / counts[:, None]
    out_values = None if values is None else (np.bincount(inverse, values, len(counts)) / counts)
    return mean.astype(np.float32), None if out_values is None else out_values.astype(np.float32)


def isolated_mask(xyz: np.ndarray, radius_m: float, min_neighbours: int) -> np.ndarray:
    """True for points with fewer than ``min_neighbours`` other points within ``radius_m``."""
    isolated = np.zeros(len(xyz), dtype=bool)
    if min_neighbours <= 0 or radius_m <= 0 or len(xyz) == 0:
        return isolated
    from scipy.spatial import cKDTree

    # Any two points in one cube of side r/sqrt(3) are within r: a point sharing its cube with at least
    # ``min_neighbours`` others is settled without a search. Only the rest go to the k-d tree.
    _, inverse, counts = np.unique(_cell_keys(xyz, radius_m / math.sqrt(3.0)), return_inverse=True,
                                   return_counts=True)
    open_ = counts[inverse] <= min_neighbours
    if open_.any():
        # the k-th nearest other point farther than r <=> fewer than k others within r; a k-NN query with a
        # small k and an upper bound is far cheaper than counting every neighbour (it runs between forwards,
        # when the cores idle, so it uses all of them)
        tree = cKDTree(xyz, balanced_tree=False, compact_nodes=False)
        dist, _ = tree.query(xyz[open_], k=min_neighbours + 1, distance_upper_bound=radius_m, workers=-1)
        isolated[open_] = ~(dist[:, min_neighbours] <= radius_m)  # column 0 is the point itself
    return isolated


def _cell_keys(xyz: np.ndarray, cell_m: float) -> np.ndarray:
    """One int64 per cube of side ``cell_m`` (for fast np.unique)."""
    cells = np.floor(xyz / cell_m).astype(np.int64)
    cells -= cells.min(0)
    span = cells.max(0) + 1
    return (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]


def obstacle_cloud(xyz_target: np.ndarray, cfg: ObstacleConfig, confidence: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Obstacle points (target frame) from points already in the target frame; ``confidence`` follows them.

    Raises ValueError for ``ground: plane`` when no ground plane can be found in the points.
    """
    xyz, conf = xyz_target, confidence
    if cfg.max_range_m > 0:
        keep = np.hypot(xyz[:, 0], xyz[:, 1]) <= cfg.max_range_m
        xyz, conf = xyz[keep], None if conf is None else conf[keep]
    if cfg.ground == "plane":
        plane = fit_ground_plane(xyz)
        if plane is None:
            raise ValueError("nav.ground is 'plane' but no near-horizontal ground plane was found in the points; "
                             "use nav.ground 'z' (the target frame's z = 0 is the ground)")
        height = xyz.astype(np.float64) @ plane[0] + plane[1]
    else:
        height = xyz[:, 2]
    keep = (height >= cfg.min_height_m) & (height <= cfg.max_height_m)
    xyz, conf = xyz[keep], None if conf is None else conf[keep]
    xyz, conf = voxel_downsample(xyz, cfg.voxel_m, conf)
    drop = isolated_mask(xyz, cfg.outlier_radius_m, cfg.outlier_min_neighbours)
    return xyz[~drop], None if conf is None else conf[~drop]


def laser_scan_ranges(xyz_target: np.ndarray, cfg: ScanConfig) -> np.ndarray:
    """(num_bins,) float32 ranges of the points (target frame) inside the scan's height band and range limits.

    Ray i is published at ``angle_min + i * angle_increment`` and holds the nearest point whose bearing is
    within half an increment of that angle (bins centred on the rays, so a point's ray is the one nearest its
    bearing); +Inf where no point is. On a full turn the last ray's far half and ray 0's near half meet.
    """
    n, inc = cfg.num_bins, cfg.angle_increment
    ranges = np.full(n, np.inf, dtype=np.float64)
    if len(xyz_target) == 0:
        return ranges.astype(np.float32)
    x, y, z = xyz_target[:, 0].astype(np.float64), xyz_target[:, 1].astype(np.float64), xyz_target[:, 2]
    r = np.hypot(x, y)
    keep = (z >= cfg.min_height_m) & (z <= cfg.max_height_m) & (r >= cfg.range_min) & (r <= cfg.range_max)
    # bearing from ray 0 plus half a ray, in [0, 2 pi): floor() then gives the nearest ray
    rel = np.mod(np.arctan2(y[keep], x[keep]) - cfg.angle_min + 0.5 * inc, 2.0 * math.pi)
    bins = np.floor(rel / inc).astype(np.int64)
    if cfg.full_turn:
        bins %= n
    inside = bins < n
    np.minimum.at(ranges, bins[inside], r[keep][inside])
    return ranges.astype(np.float32)
