"""Chaining temporal windows into one frame and unit: the reference camera's odometry (ROS-free, numpy only).

Frames. The chain frame (``temporal.odom_frame``, default ``odom_da3``) is the reference camera's optical
frame (x right, y down, z forward) at the chain's first set; its unit is that window's depth unit, or metres
when the first window comes with ``metres_per_unit`` (a metric model, the pair, a calibrated rig). Each later
window w is mapped into it by ``S_chain_window[w] = S_chain_window[w-1] @ S_{w-1,w}``, where ``S_{w-1,w}`` is
the robust alignment of the views both windows hold (``da3_ros.core.temporal.align``). The reference camera's pose
``T_chain_cam`` is rigid (rotation, translation in chain units).

Metres. A metric chain follows its metric source set by set: a window that comes with ``metres_per_unit`` is put
at exactly that scale (its depth and the step from the previous reference camera are in this set's metres), the
rotation and the previous camera's place taken from the alignment. A first window whose metres were off is not
kept for good: ``scale_drift`` says how far the alignment's chained scale disagreed with the source's
(``prev metres x alignment scale / metres - 1``), per window. A window without a metric value (the source had
none) continues on the alignment alone.

Covariance model (6x6, rows x y z rx ry rz, the layout of nav_msgs/Odometry's pose covariance, in the chain
frame; isotropic per block, so the same in any rotated frame). Each alignment adds an independent error:
translation std = the alignment's RMS residual in chain units, rotation std = its residual relative to depth
(the angle that residual subtends at the scene's depth), each at least ``min_std_rel`` (x the median depth for
translation). The variances add up window after window (a random walk, as for any odometry), so the
covariance grows with the distance travelled in windows, never shrinks. It is a model of the fit's
consistency, not a calibrated error: a self-consistent but wrong network prediction has a small residual.

Restarts. ``restart(reason)`` (and an alignment that fails) starts a new chain (``chain_id`` + 1) whose first
window is placed at the last pose of the old one, with the old chain's scale (chain units per window unit) as
the guess for the new window's, and the covariance inflated by ``restart_std_rel`` / ``restart_std_rad``: a
consumer (robot_localization in differential mode) sees no jump, and the covariance says the link is unknown.
``restart(reason, keep_pose=False)`` starts again at the identity (a new run).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from da3_ros.core.geometry import R_from_quaternion, invert_T, quaternion_from_R, valid_mask
from da3_ros.core.prediction import Prediction
from da3_ros.core.stamps import NS_PER_S
from da3_ros.core.temporal.keyframes import ResetReason, WindowLayout, shared_views
from da3_ros.core.temporal.align import AlignmentError, AlignmentFit, RobustConfig, align_windows, sim3_parts


@dataclass(frozen=True)
class ChainConfig:
    """How windows are aligned and when an alignment is refused (the chain then restarts)."""

    method: str = "sim3"  # "sim3" (point maps) or "scale" (depth ratios + the shared views' poses)
    robust: RobustConfig = field(default_factory=RobustConfig)
    min_inlier_fraction: float = 0.5
    max_residual_rel: float = 0.25  # an alignment residual above this (relative to depth) is refused
    min_std_rel: float = 1e-3  # floor of each window's std: x median depth (translation), radians (rotation)
    restart_std_rel: float = 1.0  # a restart adds this x median depth of translation std
    restart_std_rad: float = 0.5  # and this much rotation std


@dataclass(frozen=True)
class ChainStep:
    """One window in the chain: the reference camera's pose in the chain frame and what it rests on."""

    stamp_ns: int
    T_chain_cam: np.ndarray  # (4, 4) float64, reference camera in the chain frame, chain units
    covariance: np.ndarray  # (6, 6) float64, x y z (chain units^2) rx ry rz (rad^2)
    chain_per_window_unit: float  # multiply this window's depth and translations by it for chain units
    S_chain_window: np.ndarray  # (4, 4) similarity, this window's world -> chain
    is_metric: bool  # the chain is in metres
    scale_drift: float  # chain metres per window unit / the metric source's - 1 (NaN: no metric value)
    alignment: AlignmentFit | None  # None at a chain's first window
    chain_id: int  # + 1 at every restart
    window_index: int  # windows since the chain (re)started, 0 at its first
    restart: ResetReason | None = None  # why this window started a new chain (None: it continued one)
    restart_detail: str = ""


def pose_in_chain(S_chain_window: np.ndarray, T_window_cam: np.ndarray) -> np.ndarray:
    """A rigid pose in a window's world mapped by a similarity into the chain: rigid, chain units."""
    scale, R, t = sim3_parts(S_chain_window)
    T = np.eye(4)
    T[:3, :3] = R @ np.asarray(T_window_cam)[:3, :3]
    T[:3, 3] = scale * R @ np.asarray(T_window_cam)[:3, 3] + t
    return T


def rescaled_about(S: np.ndarray, scale: float, pivot: np.ndarray) -> np.ndarray:
    """The similarity ``S`` with its scale replaced by ``scale``, mapping ``pivot`` (3,) where ``S`` maps it."""
    _, R, _ = sim3_parts(S)
    p = np.asarray(pivot, np.float64)
    out = np.eye(4)
    out[:3, :3] = scale * R
    out[:3, 3] = (S[:3, :3] @ p + S[:3, 3]) - scale * R @ p
    return out


def median_depth(pred: Prediction, view: int = 0) -> float:
    """Median valid depth of one view (the prediction's unit); NaN when it has none."""
    d = pred.depth[view]
    ok = valid_mask(d)
    return float(np.median(d[ok])) if ok.any() else math.nan


def _step_covariance(std_t: float, std_r: float) -> np.ndarray:
    return np.diag([std_t ** 2] * 3 + [std_r ** 2] * 3)


class WindowChain:
    """Holds the transform from each new window into the chain frame (see the module)."""

    def __init__(self, cfg: ChainConfig | None = None):
        self.cfg = cfg or ChainConfig()
        if self.cfg.method not in ("sim3", "scale"):
            raise ValueError(f"temporal alignment method must be 'sim3' or 'scale', got {self.cfg.method!r}")
        self.chain_id = 0
        self._prev: tuple[Prediction, WindowLayout, ChainStep] | None = None
        self._pending: tuple[ResetReason, str, bool] | None = None  # a restart to apply at the next window
        self._origin = np.eye(4)  # where a new chain's first window is placed
        self._origin_cov = np.zeros((6, 6))
        self._last_scale = 1.0

    def restart(self, reason: ResetReason, detail: str = "", keep_pose: bool = True) -> None:
        """Start a new chain at the next window (see the module: at the last pose unless ``keep_pose`` False)."""
        last = self._prev[2] if self._prev is not None else None
        self._prev = None
        self._pending = (reason, detail, keep_pose)
        if last is not None and keep_pose:
            self._origin, self._origin_cov, self._last_scale = last.T_chain_cam, last.covariance, \
                last.chain_per_window_unit
        elif not keep_pose:
            self._origin, self._origin_cov, self._last_scale = np.eye(4), np.zeros((6, 6)), 1.0

    def update(self, pred: Prediction, layout: WindowLayout, metres_per_unit: float | None = None) -> ChainStep:
        """Chain one window's prediction (all N + K views); ``metres_per_unit``: the metric source for this set."""
        if pred.T_cam_world is None:
            raise ValueError("temporal windows need a model with camera heads (poses): this prediction has none")
        metres = metres_per_unit if metres_per_unit is not None and math.isfinite(metres_per_unit) \
            and metres_per_unit > 0 else None
        if self._prev is None:
            return self._start(pred, layout, metres)
        prev_pred, prev_layout, prev = self._prev
        if not prev.is_metric and metres is not None:
            self.restart(ResetReason.METRIC_ANCHOR, "a metric scale arrived for a relative chain")
            return self._start(pred, layout, metres)
        try:
            fit = align_windows(prev_pred, pred, shared_views(prev_layout, layout), self.cfg.method, self.cfg.robust)
        except AlignmentError as exc:
            self.restart(ResetReason.ALIGNMENT_FAILED, str(exc))
            return self._start(pred, layout, metres)
        if fit.inlier_fraction < self.cfg.min_inlier_fraction or not fit.residual_rel <= self.cfg.max_residual_rel:
            self.restart(ResetReason.ALIGNMENT_FAILED,
                         f"inlier fraction {fit.inlier_fraction:.2f} (min {self.cfg.min_inlier_fraction}), residual "
                         f"{fit.residual_rel:.3g} of depth (max {self.cfg.max_residual_rel})")
            return self._start(pred, layout, metres)
        S = prev.S_chain_window @ fit.S_target_source
        scale = sim3_parts(S)[0]
        drift = self._drift(prev.is_metric, scale, metres)
        if prev.is_metric and metres is not None:
            # a metric chain follows its metric source set by set (the scale filter's output), never the first
            # window's metres for good: the new window at the source's metres, pivoted on the previous reference
            # camera (its published pose stays; the step from it is measured in this set's metres)
            c_prev = invert_T(prev_pred.T_cam_world[0])[:3, 3] if prev_pred.T_cam_world is not None else np.zeros(3)
            S = rescaled_about(S, metres, (np.linalg.inv(fit.S_target_source) @ np.append(c_prev, 1.0))[:3])
            scale = metres
        depth_chain = median_depth(pred) * scale
        std_t = max(fit.residual_rms_units * prev.chain_per_window_unit, self.cfg.min_std_rel * depth_chain)
        cov = prev.covariance + _step_covariance(std_t, max(fit.residual_rel, self.cfg.min_std_rel))
        step = ChainStep(layout.stamp_ns, pose_in_chain(S, invert_T(pred.T_cam_world[0])), cov, scale, S,
                         prev.is_metric, drift, fit, self.chain_id,
                         prev.window_index + 1)
        self._prev = (pred, layout, step)
        return step

    def _start(self, pred: Prediction, layout: WindowLayout, metres: float | None) -> ChainStep:
        """The first window of a chain: its reference camera placed at the origin (see ``restart``)."""
        assert pred.T_cam_world is not None  # update checked it
        reason, detail, _ = self._pending or (None, "", True)
        if self._pending is not None:
            self.chain_id += 1
        self._pending = None
        scale = metres if metres is not None else self._last_scale
        S = self._origin.copy()
        S[:3, :3] *= scale
        S = S @ pred.T_cam_world[0]  # window world -> reference camera (window units) -> chain
        depth_chain = median_depth(pred) * scale
        std_t = self.cfg.min_std_rel * depth_chain
        cov = self._origin_cov + _step_covariance(std_t, self.cfg.min_std_rel)
        if reason is not None:
            cov = cov + _step_covariance(self.cfg.restart_std_rel * depth_chain, self.cfg.restart_std_rad)
        step = ChainStep(layout.stamp_ns, pose_in_chain(S, invert_T(pred.T_cam_world[0])), cov, scale, S,
                         metres is not None, self._drift(metres is not None, scale, metres), None, self.chain_id, 0,
                         reason, detail)
        self._prev = (pred, layout, step)
        return step

    @staticmethod
    def _drift(is_metric: bool, chain_per_unit: float, metres: float | None) -> float:
        """The chain's scale (the alignment's, before it follows the metric source) against the source's, - 1."""
        if not is_metric or metres is None:
            return math.nan
        return chain_per_unit / metres - 1.0


def in_chain_units(pred: Prediction, step: ChainStep) -> Prediction:
    """``pred`` (views of the window of ``step``) with depth and pose translations in chain units."""
    f = step.chain_per_window_unit
    T = None if pred.T_cam_world is None else pred.T_cam_world.copy()
    if T is not None:
        T[:, :3, 3] *= f
    return dataclasses.replace(
        pred, depth=(pred.depth * np.float32(f)).astype(np.float32), T_cam_world=T,
        is_metric=step.is_metric, depth_scale=None if pred.depth_scale is None else pred.depth_scale * f,
        timing_s=dict(pred.timing_s))


def format_tum_line(stamp_ns: int, T_world_cam: np.ndarray) -> str:
    """One TUM trajectory line ``timestamp tx ty tz qx qy qz qw``: seconds with all 9 ns digits, exact floats."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f"a TUM stamp must be >= 0 ns, got {stamp_ns}")
    T = np.asarray(T_world_cam, np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ValueError(f"the pose must be a finite (4, 4) matrix, got shape {T.shape}")
    q = quaternion_from_R(T[:3, :3])
    values = " ".join(format(float(v), ".17g") for v in (*T[:3, 3], *q))
    return f"{stamp_ns // NS_PER_S}.{stamp_ns % NS_PER_S:09d} {values}"


class TumWriter:
    """Appends one pose per line to a TUM file, flushed per line (a run cut short leaves a readable file)."""

    HEADER = "# timestamp tx ty tz qx qy qz qw"

    def __init__(self, path: str):
        self.path = path
        self._file = open(path, "w", encoding="ascii")  # noqa: SIM115 - closed by close() / the context
        self._file.write(self.HEADER + "\n")
        self._file.flush()

    def write(self, stamp_ns: int, T_world_cam: np.ndarray) -> None:
        """Append the pose of one set."""
        self._file.write(format_tum_line(stamp_ns, T_world_cam) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> TumWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_tum(path: str, stamps_ns: list[int], T_world_cam: np.ndarray) -> None:
    """A whole trajectory (M stamps, (M, 4, 4) poses) to a TUM file."""
    if len(stamps_ns) != len(T_world_cam):
        raise ValueError(f"{len(stamps_ns)} stamps for {len(T_world_cam)} poses")
    with TumWriter(path) as out:
        for stamp, T in zip(stamps_ns, T_world_cam):
            out.write(stamp, T)


def _parse_stamp_ns(text: str) -> int:
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(f"not a TUM stamp in seconds with at most 9 decimals: {text!r}")
    return int(whole) * NS_PER_S + int(frac.ljust(9, "0") or 0)


def read_tum(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A TUM file -> (stamps (M,) int64 ns, exact from the text; poses (M, 4, 4) float64). ``#`` lines skipped."""
    stamps, poses = [], []
    with open(path, encoding="ascii") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 8:
                raise ValueError(f"{path}:{n}: a TUM line has 8 fields (timestamp tx ty tz qx qy qz qw), got "
                                 f"{len(fields)}")
            T = np.eye(4)
            values = np.array([float(v) for v in fields[1:]])
            T[:3, 3], T[:3, :3] = values[:3], R_from_quaternion(values[3:])
            stamps.append(_parse_stamp_ns(fields[0]))
            poses.append(T)
    return np.array(stamps, dtype=np.int64), np.array(poses).reshape(-1, 4, 4)
