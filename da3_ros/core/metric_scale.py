"""Metric scale over time: one scale per set, measured by the engine, smoothed here, applied to depth and poses.

Sources (``Prediction.scale_source``): ``metric_model`` (an any-view model paired with DA3METRIC-LARGE, or
DA3METRIC-LARGE alone through its focal rule), ``nested`` (upstream's nested checkpoint), ``rig`` (poses
conditioned on known extrinsics in metres), ``range`` (the robot's range sensors, ``core.range_scale``), ``none``
(relative depth). For the fitted sources (pair, nested,
rig) the engine measures a raw scale per set — NaN when it could not (a frame nearly all sky, too few valid
pixels, or a set on which the paired metric model was skipped) — and ``ScaleFilter`` turns the raw scales
into the scale that is applied: robust to single outliers (a median over recent sets, outliers set aside),
changing by at most ``max_rate_per_s`` (relative, per second of stamps), and re-starting at the new level
when the raw scale has jumped and stayed there for ``reset_after`` sets. ROS-free.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from da3_ros.core.errors import ConfigError
from da3_ros.core.prediction import Prediction

FITTED_SOURCES = ("metric_model", "nested", "rig", "range")


@dataclass(frozen=True)
class ScaleFilterConfig:
    """How the applied scale follows the raw per-set scales (the node's ``metric.*`` parameters)."""

    enabled: bool = True  # False: every set uses its own raw scale (the last good one when it has none)
    window: int = 9  # sets in the robust median
    max_rate_per_s: float = 0.5  # largest relative change of the applied scale per second (0.5 = 50 %/s)
    outlier_ratio: float = 1.5  # a raw scale off the median by more than this factor is an outlier
    reset_after: int = 5  # this many consecutive, mutually consistent outliers: a real jump, re-start there

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError(f"metric.filter_window must be >= 1, got {self.window}")
        if not self.max_rate_per_s > 0:
            raise ConfigError(f"metric.max_rate_per_s must be > 0, got {self.max_rate_per_s}")
        if not self.outlier_ratio > 1:
            raise ConfigError(f"metric.outlier_ratio must be > 1, got {self.outlier_ratio}")
        if self.reset_after < 1:
            raise ConfigError(f"metric.reset_after must be >= 1, got {self.reset_after}")


class ScaleFilter:
    """Raw per-set scales in, the scale to apply out (see the module docstring)."""

    def __init__(self, cfg: ScaleFilterConfig | None = None):
        self.cfg = cfg = cfg or ScaleFilterConfig()
        self.value: float | None = None  # the applied scale; None until a first valid raw scale
        self._t_s: float | None = None
        self._window: deque[float] = deque(maxlen=cfg.window)
        self._outliers: list[float] = []
        self.held = 0  # sets that had no valid raw scale and kept the last one
        self.outliers = 0  # raw scales set aside
        self.resets = 0  # sustained jumps taken over

    def update(self, raw: float, t_s: float) -> float | None:
        """The scale to apply to the set stamped ``t_s`` (seconds) whose measured scale is ``raw`` (NaN: none)."""
        dt = 0.0 if self._t_s is None else max(t_s - self._t_s, 0.0)
        self._t_s = t_s
        if not (math.isfinite(raw) and raw > 0):
            self.held += 1
            return self.value
        if self.value is None or not self.cfg.enabled:
            self._restart([raw])
            return self.value
        median = float(np.median(self._window))
        if max(raw / median, median / raw) > self.cfg.outlier_ratio:
            self.outliers += 1
            self._outliers.append(raw)
            lo, hi = min(self._outliers), max(self._outliers)
            if hi / lo > self.cfg.outlier_ratio:  # not one new level: keep only the latest
                self._outliers = [raw]
            if len(self._outliers) >= self.cfg.reset_after:
                self.resets += 1
                self._restart(self._outliers)
            return self.value
        self._outliers = []
        self._window.append(raw)
        target = float(np.median(self._window))
        step = math.log1p(self.cfg.max_rate_per_s) * dt  # at most (1 + rate) per second, either way
        delta = float(np.clip(math.log(target / self.value), -step, step))
        self.value *= math.exp(delta)
        return self.value

    def _restart(self, raws: list[float]) -> None:
        self._window.clear()
        self._window.extend(raws)
        self._outliers = []
        self.value = float(np.median(raws))


def apply_scale(pred: Prediction, scale: float | None) -> Prediction:
    """``pred`` with its fitted scale replaced by ``scale`` (depth, pose translations, depth_scale rescaled).

    ``pred.scale_raw`` is what the engine applied (NaN: nothing). Without any scale (``None``) a fitted
    source stays relative: ``is_metric`` False.
    """
    if pred.scale_source not in FITTED_SOURCES:
        return pred
    applied = pred.scale_raw if math.isfinite(pred.scale_raw) else 1.0
    if scale is None:
        return dataclasses.replace(pred, is_metric=False, scale=float("nan"))
    ratio = scale / applied
    if ratio == 1.0:
        return dataclasses.replace(pred, is_metric=True, scale=scale)
    T = pred.T_cam_world
    if T is not None and pred.scale_source != "rig":  # a rig's poses are the given ones, already in metres
        T = T.copy()
        T[:, :3, 3] *= ratio
    return dataclasses.replace(
        pred, depth=(pred.depth * np.float32(ratio)).astype(np.float32), T_cam_world=T, is_metric=True, scale=scale,
        depth_scale=None if pred.depth_scale is None else pred.depth_scale * ratio)
