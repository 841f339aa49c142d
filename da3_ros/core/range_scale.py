"""Metres from the robot's range sensors: their returns seen from each camera anchor one scale per set. ROS-free.

A range sensor (3-D LiDAR, laser scan, depth camera) measures metres; DA3's depth is right up to one unknown
factor per set (all views of a multi-view forward share one unit). Each return is moved into every camera's
optical frame (the caller's TF), projected through the view's K at the network resolution, and a z-buffer keeps
the nearest return per pixel: the sensor sees the far side of an edge that the camera does not, and a return
hidden behind a nearer surface from the camera's viewpoint would pair a far range with near depth. The pairs
(DA3 depth, range z) give the scale s with s * depth = range, fitted robustly on log-ratios:

1. the median of log(range / depth) over every pair;
2. inliers: pairs within ``inlier_log_tol`` of it (a fixed band, not one set by the spread, so that 20 % of
   wild returns cannot widen it);
3. s = exp(confidence-weighted mean of the inliers' log-ratios), the band re-centred once on it.

The set's scale is unknown (NaN, with the reason) when fewer than ``min_points`` inliers remain, when the
inliers are not the majority of the pairs (no one scale explains the returns), or when their relative RMS
residual exceeds ``max_residual``: never a guess. The result feeds ``metric_scale.ScaleFilter`` as the other
fitted sources do (``scale_source`` "range").
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

import numpy as np

from da3_ros.core.errors import ConfigError
from da3_ros.core.prediction import Prediction

T = TypeVar("T")


class RangeKind(str, Enum):
    """What a ``metric.range_topics`` entry carries: ``<kind>:<topic>``."""

    CLOUD = "cloud"  # sensor_msgs/PointCloud2 (a 3-D LiDAR, a depth camera's cloud): x y z in its frame
    SCAN = "scan"  # sensor_msgs/LaserScan: a plane of ranges in its frame
    DEPTH = "depth"  # sensor_msgs/Image 16UC1 (mm) or 32FC1 (m), with camera_info beside it


@dataclass(frozen=True)
class RangeSource:
    """One range topic of ``metric.range_topics``."""

    kind: RangeKind
    topic: str

    @property
    def info_topic(self) -> str:
        """A depth image's camera_info: ``camera_info`` beside the image topic (image_transport's rule)."""
        head, _, _ = self.topic.rpartition("/")
        return f"{head}/camera_info" if head else "camera_info"


def parse_range_topics(entries: Sequence[str] | None) -> tuple[RangeSource, ...]:
    """``metric.range_topics`` entries ``cloud:/points``, ``scan:/scan``, ``depth:/cam/depth/image_rect_raw``."""
    kinds = ", ".join(k.value for k in RangeKind)
    sources = []
    for entry in entries or ():
        kind, sep, topic = str(entry).partition(":")
        if not sep or kind not in {k.value for k in RangeKind} or not topic.strip():
            raise ConfigError(f"metric.range_topics entry {entry!r} is not <kind>:<topic> with kind one of {kinds} "
                              "(e.g. cloud:/velodyne_points, scan:/scan, depth:/camera/depth/image_rect_raw)")
        sources.append(RangeSource(RangeKind(kind), topic.strip()))
    topics = [s.topic for s in sources]
    if len(set(topics)) != len(topics):
        raise ConfigError(f"metric.range_topics names a topic twice: {list(entries or ())}")
    return tuple(sources)


@dataclass(frozen=True)
class RangeFitConfig:
    """How range returns become a set's scale (the node's ``metric.range_*`` parameters)."""

    slop_s: float = 0.1  # a range message is used for a set within this of the set's reference stamp
    max_m: float = 100.0  # returns deeper than this in a camera (z along its axis) are not used
    min_points: int = 20  # fewer inliers than this: the set's scale is unknown
    max_residual: float = 0.1  # relative RMS of the inliers above this: unknown
    min_confidence: float = 0.0  # pixels where DA3's confidence is below this are not used
    inlier_log_tol: float = math.log(1.25)  # the inlier band around the median log-ratio (+-25 %)

    def __post_init__(self) -> None:
        for name, value in (("metric.range_slop_s", self.slop_s), ("metric.range_max_m", self.max_m),
                            ("metric.range_max_residual", self.max_residual)):
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.min_points < 3:
            raise ConfigError(f"metric.range_min_points must be >= 3, got {self.min_points}")


@dataclass(frozen=True)
class RangeFit:
    """One set's range scale: ``scale`` (NaN: unknown, ``reason`` says why) and how well it held."""

    scale: float
    points: int = 0  # returns paired with a valid DA3 pixel (after the z-buffer and the filters)
    inliers: int = 0
    residual: float = float("nan")  # relative RMS of (s * depth - range) / range over the inliers
    offset_s: float = float("nan")  # largest |range stamp - set stamp| of the messages used
    reason: str = ""
    check_of: str = ""  # the source this fit only checks (rig): its scale was not applied
    versus: float = float("nan")  # range scale / the engine's own metres (metric model, nested, rig), if any

    @property
    def known(self) -> bool:
        """Whether the set got a scale."""
        return math.isfinite(self.scale)


def unknown(reason: str, points: int = 0, offset_s: float = float("nan")) -> RangeFit:
    """A set without a range scale, and why."""
    return RangeFit(float("nan"), points, 0, float("nan"), offset_s, reason)


@dataclass(frozen=True)
class RangeInput:
    """A set's range returns, per view in that camera's optical frame (None: no path from the sensor)."""

    points_cam: list[np.ndarray | None]  # (3, M) float32 x; y; z rows, metres, per view in camera order: only
    # returns ahead of the camera within max_m (rows, not points: the projection runs on contiguous arrays)
    cfg: RangeFitConfig
    offset_s: float = float("nan")
    problem: str = ""  # why nothing can be fitted (no message in time, no TF): the fit is unknown with this


@dataclass(frozen=True)
class RangeReading:
    """One range message's returns: points (M, 3) in metres in the sensor's ``frame``, at ``stamp_ns``."""

    points: np.ndarray
    frame: str
    stamp_ns: int | None = None  # the message's stamp: where a timed (/tf) chain to the cameras is looked up


@dataclass(frozen=True)
class RangeSet:
    """The range messages picked for a set, in their sensors' frames (``LatestByStamp.pick``)."""

    readings: list[RangeReading]
    cfg: RangeFitConfig
    offset_s: float = float("nan")  # the largest |message stamp - set stamp|
    problem: str = ""  # why there is nothing to fit (no message in time, unreadable)


def into_cameras(ranges: RangeSet, frame_ids: Sequence[str],
                 lookup: Callable[[str, str, int | None], np.ndarray | None]) -> RangeInput:
    """Each reading's points (metres, in its sensor frame) moved into every camera's optical frame.

    ``lookup(target, source, stamp_ns)`` is T_target_source at the reading's stamp, or None (``TfBuffer.lookup``);
    a sensor with no path to a camera gives that camera nothing, and a set where no camera gets any return has
    the missing paths as its problem.
    """
    cfg, offset_s = ranges.cfg, ranges.offset_s
    if ranges.problem:
        return RangeInput([None] * len(frame_ids), cfg, offset_s, ranges.problem)
    per_view: list[list[np.ndarray]] = [[] for _ in frame_ids]
    missing = []
    for reading in ranges.readings:
        # float32 rows: a sensor's own precision, half the memory traffic, and contiguous arrays to multiply
        xyz = np.ascontiguousarray(np.asarray(reading.points, np.float32).reshape(-1, 3).T)
        for i, camera in enumerate(frame_ids):
            T = lookup(camera, reading.frame, reading.stamp_ns)
            if T is None:
                missing.append(f"{reading.frame!r} -> {camera!r}")
                continue
            per_view[i].append(_ahead_in(xyz, T, cfg.max_m))
    views = [None if not v else v[0] if len(v) == 1 else np.concatenate(v, axis=1) for v in per_view]
    problem = ""
    if all(v is None for v in views):
        problem = (f"no transform from the range sensor to any camera ({', '.join(missing)}) at the message's "
                   "stamp: publish the sensor's mount on /tf_static (robot_state_publisher, "
                   "static_transform_publisher), or its /tf within a few seconds of the message"
                   if missing else "no range returns in the messages used")
    return RangeInput(views, cfg, offset_s, problem)


def _ahead_in(xyz: np.ndarray, T_cam_sensor: np.ndarray, max_m: float) -> np.ndarray:
    """(3, M) sensor points -> the (3, M') of them ahead of the camera within ``max_m``, in its frame."""
    R, t = T_cam_sensor[:3, :3].astype(np.float32), T_cam_sensor[:3, 3].astype(np.float32)
    x, y, z = xyz
    depth = R[2, 0] * x + R[2, 1] * y + R[2, 2] * z + t[2]  # first: most of a sweep is behind any one camera
    ahead = (depth > 1e-6) & (depth <= max_m)  # NaN compares False: dropped here too
    x, y, z = x[ahead], y[ahead], z[ahead]
    return np.stack([R[0, 0] * x + R[0, 1] * y + R[0, 2] * z + t[0], R[1, 0] * x + R[1, 1] * y + R[1, 2] * z + t[1],
                     depth[ahead]])


def nearest_per_pixel(points_cam: np.ndarray, K: np.ndarray, hw: tuple[int, int],
                      max_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(flat pixel index, z in metres) of the nearest return per pixel of an (H, W) view with intrinsics K.

    ``points_cam``: (3, M) rows x; y; z in the camera's optical frame. Returns behind the camera, outside the
    image or deeper than ``max_m`` are dropped; where several returns fall on one pixel only the nearest is
    kept (the z-buffer: the others are hidden from the camera).
    """
    h, w = hw
    x, y, z = np.asarray(points_cam)
    ahead = (z > 1e-6) & (z <= max_m)  # NaN compares False: dropped here too
    if not ahead.all():
        x, y, z = x[ahead], y[ahead], z[ahead]
    # pixel centres at integer coordinates (OpenCV, camera_info): pixel u covers [u - 0.5, u + 0.5)
    x, y = x / z, y / z
    fx, s, cx, fy, cy = (float(k) for k in (K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]))
    v = np.floor(fy * y + (cy + 0.5))
    u = np.floor(fx * x + s * y + (cx + 0.5)) if s else np.floor(fx * x + (cx + 0.5))
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pixel = v[inside].astype(np.int64) * w + u[inside].astype(np.int64)
    zbuf = np.full(h * w, np.inf, z.dtype)
    np.minimum.at(zbuf, pixel, z[inside])  # the nearest return per pixel
    kept = np.flatnonzero(zbuf < np.inf)
    return kept, zbuf[kept]


def fit_scale(depth: np.ndarray, range_m: np.ndarray, weight: np.ndarray, cfg: RangeFitConfig) -> RangeFit:
    """The scale s with s * depth = range over paired samples, robustly (see the module docstring)."""
    n = len(depth)
    if n < cfg.min_points:
        return unknown(f"{n} range returns on valid pixels, fewer than metric.range_min_points "
                       f"{cfg.min_points}", n)
    log_ratio = np.log(range_m, dtype=np.float64) - np.log(depth, dtype=np.float64)
    w = np.maximum(weight, 1e-12, dtype=np.float64)
    centre = float(np.median(log_ratio))  # the band's first centre; the weights come in with the mean
    for _ in range(2):  # the band around the median, then once around the inliers' mean
        inlier = np.abs(log_ratio - centre) <= cfg.inlier_log_tol
        l_in, w_in = log_ratio[inlier], w[inlier]
        centre = float(np.dot(w_in, l_in) / w_in.sum()) if len(l_in) else centre
    count = len(l_in)
    rel = np.expm1(centre - l_in)  # (s * depth - range) / range, with log(s) = centre
    residual = float(np.sqrt(np.dot(w_in, rel * rel) / w_in.sum())) if count else float("nan")
    fit = RangeFit(math.exp(centre), n, count, residual)
    if count < cfg.min_points:
        return dataclasses.replace(fit, scale=float("nan"), reason=f"{count} inliers of {n} returns, fewer than "
                                   f"metric.range_min_points {cfg.min_points}")
    if 2 * count <= n:
        return dataclasses.replace(fit, scale=float("nan"), reason=f"only {count} of {n} returns agree on one "
                                   "scale: the sensor and DA3 disagree (a wrong TF, another scene, a moving sensor)")
    if residual > cfg.max_residual:
        return dataclasses.replace(fit, scale=float("nan"), reason=f"residual {residual:.3g} above "
                                   f"metric.range_max_residual {cfg.max_residual}")
    return fit


def pairs(pred: Prediction, points_cam: list[np.ndarray | None], cfg: RangeFitConfig,
          views: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(DA3 depth, range z, weight) of every return on a valid pixel of the first ``views`` views (float32)."""
    got: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i in range(views):
        K, points = pred.K_of(i), points_cam[i] if i < len(points_cam) else None
        if K is None or points is None or not points.shape[1]:
            continue
        pixel, z = nearest_per_pixel(points, K, pred.hw, cfg.max_m)
        d = pred.depth[i].reshape(-1)[pixel]
        ok = (d > 0) & (d < np.inf)  # NaN compares False
        if pred.confidence is None:
            w = np.ones_like(d)
        else:
            w = pred.confidence[i].reshape(-1)[pixel]
            ok &= (w >= cfg.min_confidence) & (w < np.inf)
        if pred.sky_mask is not None:
            ok &= ~pred.sky_mask[i].reshape(-1)[pixel]
        got.append((d[ok], z[ok], w[ok]))
    if not got:
        return np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32)
    d, z, w = (parts[0] if len(parts) == 1 else np.concatenate(parts) for parts in zip(*got))
    return d, z, w


def range_scaled(pred: Prediction, ranges: RangeInput, views: int) -> tuple[Prediction, RangeFit]:
    """``pred`` in the range sensor's metres (``scale_source`` "range"), and the fit.

    Fitted on the first ``views`` views (the set's own, not a temporal window's keyframes). A rig's metres
    (known extrinsics) win: the fit is only a check there. Otherwise the range scale replaces whatever the
    engine applied; an unknown fit leaves the set without a measured scale (NaN), so the filter holds its last.
    """
    engine_scale = pred.scale_raw if math.isfinite(pred.scale_raw) else 1.0
    if ranges.problem:
        fit = unknown(ranges.problem, 0, ranges.offset_s)
    else:
        fit = dataclasses.replace(fit_scale(*pairs(pred, ranges.points_cam, ranges.cfg, views), ranges.cfg),
                                  offset_s=ranges.offset_s)
    own = pred.scale_source != "none" and math.isfinite(pred.scale_raw)
    if own:
        fit = dataclasses.replace(fit, versus=fit.scale)  # fitted on the engine's metres: the ratio of the two
    if pred.scale_source == "rig":
        return pred, dataclasses.replace(fit, check_of="rig")
    # the fit was on the engine's output: apply it on top; unknown: back to the network's own units
    ratio = fit.scale if fit.known else 1.0 / engine_scale
    factor = np.float32(ratio)
    T = pred.T_cam_world
    if T is not None and ratio != 1.0:
        T = T.copy()
        T[:, :3, 3] *= ratio
    raw = fit.scale * engine_scale if fit.known else float("nan")
    return dataclasses.replace(
        pred, depth=pred.depth if ratio == 1.0 else np.multiply(pred.depth, factor, dtype=np.float32), T_cam_world=T,
        depth_scale=None if pred.depth_scale is None else pred.depth_scale * ratio,
        scale_source="range", scale_raw=raw, is_metric=fit.known), fit


class LatestByStamp(Generic[T]):
    """The last few messages of each range topic; per set, each topic's message nearest the set's stamp."""

    def __init__(self, sources: int, keep: int = 16):
        self._held: list[deque[tuple[int, T]]] = [deque(maxlen=keep) for _ in range(sources)]
        self.stale = 0  # sets for which a topic had messages, none within the slop

    def add(self, source: int, stamp_ns: int, item: T) -> None:
        """A message of topic ``source`` stamped ``stamp_ns`` (the callbacks' thread)."""
        self._held[source].append((stamp_ns, item))

    def pick(self, stamp_ns: int, slop_ns: int) -> tuple[list[tuple[int, T]], float, str]:
        """([(source, item)] within ``slop_ns`` of ``stamp_ns``, the largest offset in s, why none fits)."""
        chosen, offsets, stale = [], [], []
        for source, held in enumerate(self._held):
            items = list(held)  # a copy: the callbacks append meanwhile
            if not items:
                continue
            offset, item = min(((abs(s - stamp_ns), item) for s, item in items), key=lambda x: x[0])
            if offset <= slop_ns:
                chosen.append((source, item))
                offsets.append(offset)
            else:
                stale.append(offset)
        if chosen:
            return chosen, max(offsets) / 1e9, ""
        if not stale:
            return [], float("nan"), "no range message received yet"
        self.stale += 1
        return [], min(stale) / 1e9, (f"no range message within metric.range_slop_s {slop_ns / 1e9:g} s of the "
                                      f"set (the nearest is {min(stale) / 1e9:.3g} s away)")
