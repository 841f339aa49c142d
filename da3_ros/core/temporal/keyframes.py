"""Temporal window: keyframes of the reference camera join each forward (ROS-free, numpy only).

What is stored: for each keyframe, the REFERENCE camera's network-resolution input tensor (3, H, W) float32
(exactly what the engine took), its stamp, and its prediction from the window that made it a keyframe: depth
and confidence (H, W) in the chain's unit, K (3, 3) at the network resolution, and its pose ``T_chain_cam`` in
the chain frame (``da3_ros.core.temporal.chain``). Only the reference camera is stored, so a window costs N + K views
(not N x (K + 1)) and every keyframe is a past pose of the one camera the chain tracks.

The keyframe rule (``KeyframeRule.decide``), applied once per processed set to its reference view, in order:

1. ``max_keyframes == 0``: never (today's behaviour); a view without valid depth: never ("no_depth").
2. an empty store: the view is stored (the first keyframe of a chain).
3. a stamp not after the newest keyframe's: not stored (the caller resets on stamps going backward).
4. less than ``min_interval_ns`` after the newest keyframe: not stored (bounds the store's churn).
5. sharpness (variance of the Laplacian of the grey image) below ``min_sharpness_ratio`` x the median of the
   stored keyframes': not stored (motion blur).
6. parallax to the newest keyframe: the translation between the two poses divided by the current view's
   median depth (unit-free) >= ``min_translation_rel``, or the rotation angle >= ``min_rotation_deg``: stored;
   else not ("stationary"). So a robot that does not move adds no keyframe after its first.

When the store is full, the least useful keyframe leaves first: the one farthest from the new keyframe's pose
(parallax in units of the two thresholds, summed), the oldest among equals. For a robot driving on that is the
oldest; a place revisited keeps its keyframes near the current view. Decisions depend only on the inputs, so
the same sets give the same keyframes.

Window layout (``assemble_window``): the N current views first, in the engine's order (view 0 = the
reference camera, which pins DA3's world frame), then the keyframes oldest first. With K = 0 the batch is
exactly today's; the current views keep their indices; keyframes keep their relative order across windows.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from da3_ros.core.prediction import Prediction


class ResetReason(str, Enum):
    """Why the temporal state (keyframes and chain) started afresh; the caller counts and says it."""

    REFERENCE_SILENT = "reference_silent"  # the reference camera is out of the set: no view 0 to chain
    STREAM_PAUSED = "stream_paused"  # a gap longer than TemporalConfig.max_gap_ns between sets
    STAMP_BACKWARDS = "stamp_backwards"  # a looping bag, restarted sim time
    REACTIVATED = "reactivated"  # lifecycle deactivate -> activate, or a new offline run
    NETWORK_SIZE_CHANGED = "network_size_changed"  # process_res or the cameras' sizes changed
    ALIGNMENT_FAILED = "alignment_failed"  # the window could not be aligned to the previous one
    METRIC_ANCHOR = "metric_anchor"  # a metric scale arrived for a chain started without one
    PARAMETERS_CHANGED = "parameters_changed"  # temporal.* changed at runtime


@dataclass(frozen=True)
class Keyframe:
    """One stored view of the reference camera (see the module for what and why)."""

    stamp_ns: int
    image_chw: np.ndarray  # (3, H, W) float32, the network input as the engine took it
    T_chain_cam: np.ndarray  # (4, 4) float64 pose in the chain frame, translation in chain units
    median_depth_chain: float  # median valid depth of the view, chain units
    sharpness: float  # variance of the Laplacian of the grey image (relative use only)
    depth_chain: np.ndarray | None = None  # (H, W) float32 depth in chain units, NaN where invalid
    confidence: np.ndarray | None = None  # (H, W) float32
    K_proc: np.ndarray | None = None  # (3, 3) float64 at the network resolution

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image_chw.shape[1]), int(self.image_chw.shape[2])


def sharpness(image_chw: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image (channel mean) of a (3, H, W) image.

    Any per-channel affine normalisation keeps blur ordering, so the network's normalised input works as well
    as the raw image; the value is compared only with other views of the same camera.
    """
    img = np.asarray(image_chw, np.float64)
    if img.ndim != 3 or img.shape[1] < 3 or img.shape[2] < 3:
        raise ValueError(f"image must be (C, H, W) with H, W >= 3, got {img.shape}")
    g = img.mean(axis=0)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def parallax(T_a: np.ndarray, T_b: np.ndarray, median_depth: float) -> tuple[float, float]:
    """(translation / median_depth, rotation angle in degrees) between two poses in one frame and unit."""
    dt = float(np.linalg.norm(np.asarray(T_a)[:3, 3] - np.asarray(T_b)[:3, 3]))
    R = np.asarray(T_a)[:3, :3].T @ np.asarray(T_b)[:3, :3]
    cos = min(1.0, max(-1.0, (float(np.trace(R)) - 1.0) / 2.0))
    return dt / median_depth if median_depth > 0 else math.inf, math.degrees(math.acos(cos))


@dataclass(frozen=True)
class KeyframeDecision:
    """Whether a view becomes a keyframe, why, and which stored keyframe leaves for it (its stamp)."""

    add: bool
    reason: str  # disabled, no_depth, first, stamp_not_after_newest, too_soon, blurred, stationary, parallax
    evict_stamp_ns: int | None = None
    translation_rel: float = math.nan
    rotation_deg: float = math.nan


@dataclass(frozen=True)
class KeyframeRule:
    """The keyframe rule's thresholds (see the module docstring for the rule)."""

    max_keyframes: int = 0  # K: the store's capacity, extra views per forward
    min_translation_rel: float = 0.05  # translation since the newest keyframe / median depth
    min_rotation_deg: float = 5.0
    min_interval_ns: int = 100_000_000  # at most one new keyframe per 0.1 s of stamps
    min_sharpness_ratio: float = 0.5  # x the median sharpness of the stored keyframes

    def __post_init__(self) -> None:
        if self.max_keyframes < 0 or self.min_interval_ns < 0:
            raise ValueError(f"max_keyframes ({self.max_keyframes}) and min_interval_ns ({self.min_interval_ns}) "
                             "must be >= 0")
        if not (self.min_translation_rel > 0 and self.min_rotation_deg > 0 and self.min_sharpness_ratio >= 0):
            raise ValueError("min_translation_rel and min_rotation_deg must be > 0, min_sharpness_ratio >= 0, got "
                             f"{self.min_translation_rel}, {self.min_rotation_deg}, {self.min_sharpness_ratio}")

    def decide(self, candidate: Keyframe, stored: list[Keyframe]) -> KeyframeDecision:
        """Apply the rule to ``candidate`` against the ``stored`` keyframes (oldest first)."""
        if self.max_keyframes == 0:
            return KeyframeDecision(False, "disabled")
        if not (math.isfinite(candidate.median_depth_chain) and candidate.median_depth_chain > 0):
            return KeyframeDecision(False, "no_depth")  # nothing valid to measure parallax with, or to align on
        if not stored:
            return KeyframeDecision(True, "first")
        newest = stored[-1]
        if candidate.stamp_ns <= newest.stamp_ns:
            return KeyframeDecision(False, "stamp_not_after_newest")
        if candidate.stamp_ns - newest.stamp_ns < self.min_interval_ns:
            return KeyframeDecision(False, "too_soon")
        if candidate.sharpness < self.min_sharpness_ratio * float(np.median([k.sharpness for k in stored])):
            return KeyframeDecision(False, "blurred")
        t_rel, r_deg = parallax(newest.T_chain_cam, candidate.T_chain_cam, candidate.median_depth_chain)
        if t_rel < self.min_translation_rel and r_deg < self.min_rotation_deg:
            return KeyframeDecision(False, "stationary", None, t_rel, r_deg)
        evict = self._least_useful(candidate, stored) if len(stored) >= self.max_keyframes else None
        return KeyframeDecision(True, "parallax", evict, t_rel, r_deg)

    def _least_useful(self, candidate: Keyframe, stored: list[Keyframe]) -> int:
        """Stamp of the keyframe farthest from ``candidate`` (in threshold units), the oldest among equals."""
        def distance(k: Keyframe) -> float:
            t_rel, r_deg = parallax(k.T_chain_cam, candidate.T_chain_cam, candidate.median_depth_chain)
            return t_rel / self.min_translation_rel + r_deg / self.min_rotation_deg
        far = max(distance(k) for k in stored)
        return min(k.stamp_ns for k in stored if distance(k) >= far * (1 - 1e-9))


class KeyframeStore:
    """Up to ``rule.max_keyframes`` keyframes of the reference camera, oldest first."""

    def __init__(self, rule: KeyframeRule):
        self.rule = rule
        self.keyframes: list[Keyframe] = []

    def consider(self, candidate: Keyframe) -> KeyframeDecision:
        """Apply the rule; store the candidate (and drop the evicted one) when it says so."""
        decision = self.rule.decide(candidate, self.keyframes)
        if decision.add:
            self.keyframes = [k for k in self.keyframes if k.stamp_ns != decision.evict_stamp_ns] + [candidate]
            del self.keyframes[:-self.rule.max_keyframes]  # a lowered capacity: the oldest leave
        return decision

    def reset(self) -> None:
        """Forget every keyframe (their poses are in a chain frame that no longer exists)."""
        self.keyframes = []

    @property
    def stamps_ns(self) -> tuple[int, ...]:
        return tuple(k.stamp_ns for k in self.keyframes)


@dataclass(frozen=True)
class WindowLayout:
    """Which view of a window's batch is what: views 0..N-1 the current set (0 = reference), then keyframes."""

    stamp_ns: int  # the current set's stamp
    n_current: int
    keyframe_stamps_ns: tuple[int, ...]  # oldest first

    @property
    def n_views(self) -> int:
        return self.n_current + len(self.keyframe_stamps_ns)

    def reference_view_of(self, stamp_ns: int) -> int | None:
        """The view holding the reference camera's image of the set ``stamp_ns``; None if not in this window."""
        if stamp_ns == self.stamp_ns:
            return 0
        if stamp_ns in self.keyframe_stamps_ns:
            return self.n_current + self.keyframe_stamps_ns.index(stamp_ns)
        return None


def shared_views(older: WindowLayout, newer: WindowLayout) -> list[tuple[int, int]]:
    """[(view in older, view in newer)] of the reference-camera images both windows hold, oldest first."""
    pairs = []
    for stamp in sorted(set(newer.keyframe_stamps_ns) | {newer.stamp_ns}):
        i_old, i_new = older.reference_view_of(stamp), newer.reference_view_of(stamp)
        if i_old is not None and i_new is not None:
            pairs.append((i_old, i_new))
    return pairs


def assemble_window(current_chw: np.ndarray, stamp_ns: int, store: KeyframeStore) -> tuple[np.ndarray, WindowLayout]:
    """The batch (N + K, 3, H, W) float32 of the current views (engine order) and the stored keyframes."""
    current = np.asarray(current_chw)
    if current.ndim != 4 or current.shape[1] != 3 or current.dtype != np.float32:
        raise ValueError(f"current views must be (N, 3, H, W) float32, got {current.shape} {current.dtype}")
    hw = (int(current.shape[2]), int(current.shape[3]))
    wrong = [k.stamp_ns for k in store.keyframes if k.hw != hw]
    if wrong:
        raise ValueError(f"keyframes {wrong} are {store.keyframes[0].hw}, the current views {hw}: reset the "
                         "store when the network size changes (ResetReason.NETWORK_SIZE_CHANGED)")
    layout = WindowLayout(int(stamp_ns), int(current.shape[0]), store.stamps_ns)
    if not store.keyframes:
        return current, layout
    return np.concatenate([current, np.stack([k.image_chw for k in store.keyframes])]), layout


def split_prediction(pred: Prediction, layout: WindowLayout) -> tuple[Prediction, Prediction | None]:
    """A window's prediction -> (the N current views, the keyframe views or None when there are none)."""
    if pred.num_views != layout.n_views:
        raise ValueError(f"the prediction has {pred.num_views} views, the window {layout.n_views}")
    n = layout.n_current
    current = pred.reordered(list(range(n)))
    if layout.n_views == n:
        return dataclasses.replace(current, timing_s=dict(pred.timing_s)), None
    # the keyframes' images are not the current set's: a prediction may carry rgb_proc of its N current views only
    rest = pred if pred.rgb_proc is None or len(pred.rgb_proc) == layout.n_views else dataclasses.replace(
        pred, rgb_proc=None)
    return current, rest.reordered(list(range(n, layout.n_views)))
