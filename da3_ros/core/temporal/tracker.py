"""The temporal window as one object: keyframe store + window chain, reset together (ROS-free, numpy only).

Per processed set, in order (what the per-set pipeline, the node, ``da3-ros bag`` and ``media`` call)::

    window = tracker.window(current_chw, stamp_ns)      # (N + K, 3, H, W); window.reset: a reset it made
    pred = <one forward of the engine on window.batch_chw>  # N + K views, view 0 = the reference camera
    step = tracker.update(window, pred, metres_per_unit)  # chain step + keyframe decision
    publish step.current (depth in chain units), step.chain.T_chain_cam / covariance, step.chain.restart

The tracker resets itself (and says so in ``Window.reset``) on stamps going backward, a gap longer than
``max_gap_ns`` and a changed network size; the caller calls ``reset`` for what only it knows (the reference
camera silent, a lifecycle re-activation). Every reset is counted in ``reset_counts`` by reason.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from da3_ros.core.geometry import valid_mask
from da3_ros.core.prediction import Prediction
from da3_ros.core.temporal.keyframes import (Keyframe, KeyframeDecision, KeyframeRule, KeyframeStore, ResetReason,
                                             WindowLayout, assemble_window, sharpness, split_prediction)
from da3_ros.core.temporal.chain import ChainConfig, ChainStep, WindowChain, in_chain_units, median_depth


@dataclass(frozen=True)
class TemporalConfig:
    """``temporal.*``: the keyframe rule, the chain, and the longest gap between sets that keeps the chain."""

    rule: KeyframeRule = field(default_factory=KeyframeRule)
    chain: ChainConfig = field(default_factory=ChainConfig)
    max_gap_ns: int = 2_000_000_000  # a longer gap between sets (a paused stream): reset


@dataclass(frozen=True)
class Window:
    """One forward's input: the batch, what each view is, and the reset the tracker made before it (if any)."""

    batch_chw: np.ndarray  # (N + K, 3, H, W) float32
    layout: WindowLayout
    reset: ResetReason | None = None


@dataclass(frozen=True)
class TemporalStep:
    """One set's temporal outputs."""

    current: Prediction  # the N current views, depth and translations in chain units
    chain: ChainStep
    keyframe: KeyframeDecision
    layout: WindowLayout  # the window's views: the N current ones, then the keyframes (their stamps)


class TemporalTracker:
    """Keyframes + chain for one rig (``temporal.keyframes`` >= 1; with 0 the node builds no tracker)."""

    def __init__(self, cfg: TemporalConfig):
        if cfg.rule.max_keyframes < 1:
            raise ValueError("a temporal tracker needs max_keyframes >= 1 (windows share keyframes); "
                             "temporal.keyframes: 0 is today's behaviour, without a tracker")
        self.cfg = cfg
        self.store = KeyframeStore(cfg.rule)
        self.chain = WindowChain(cfg.chain)
        self.reset_counts: Counter[str] = Counter()
        self._last_stamp_ns: int | None = None
        self._hw: tuple[int, int] | None = None
        self._reset_asked = False
        # the newest stamp of a set seen but not processed since the last one (always newer than it), or None
        self._heard_ns: int | None = None
        # a real silence found between sets seen but not processed: (from, to) ns; the next set restarts
        self._silence_ns: tuple[int, int] | None = None

    @property
    def has_state(self) -> bool:
        """Whether anything would be forgotten by a reset (a set seen since the last one)."""
        return self._last_stamp_ns is not None or bool(self.store.keyframes)

    def reset(self, reason: ResetReason, detail: str = "", keep_pose: bool = True) -> None:
        """Forget the keyframes and restart the chain (at its last pose unless ``keep_pose`` is False)."""
        self.store.reset()
        self.chain.restart(reason, detail, keep_pose)
        self.reset_counts[reason.value] += 1
        self._last_stamp_ns = self._heard_ns = None
        self._silence_ns = None
        self._reset_asked = True  # the chain's next step says this restart; counted here, once

    def heard(self, stamp_ns: int) -> None:
        """A set of the reference camera seen but not processed on purpose: no silence.

        Skipped by ``--every-n`` offline, or superseded while the live node's worker was busy. The gap rule
        (``max_gap_ns``) measures between consecutive sets seen, processed or not: sets skipped by choice are
        not a paused stream, but a real silence before a skipped set still is (the next processed set restarts
        the chain). Before the chain's first set, or with an older stamp, nothing changes.
        """
        stamp_ns = int(stamp_ns)
        since = self._gap_start_ns()
        if since is not None and stamp_ns > since:
            if stamp_ns - since > self.cfg.max_gap_ns and self._silence_ns is None:
                self._silence_ns = (since, stamp_ns)
            self._heard_ns = stamp_ns

    def _gap_start_ns(self) -> int | None:
        """Where the gap rule measures from: the newest set seen (heard, else the last processed)."""
        return self._last_stamp_ns if self._heard_ns is None else self._heard_ns

    def _auto_reset(self, stamp_ns: int, hw: tuple[int, int]) -> ResetReason | None:
        last = self._last_stamp_ns
        reason = None
        since = self._gap_start_ns()
        if last is not None and stamp_ns <= last:
            reason = ResetReason.STAMP_BACKWARDS
        elif self._silence_ns is not None or (since is not None and stamp_ns - since > self.cfg.max_gap_ns):
            reason = ResetReason.STREAM_PAUSED
        elif self._hw is not None and hw != self._hw:
            reason = ResetReason.NETWORK_SIZE_CHANGED
        if reason is not None:
            self.reset(reason, f"set at {stamp_ns} ns after {last} ns, network size {hw} after {self._hw}")
        return reason

    def window(self, current_chw: np.ndarray, stamp_ns: int) -> Window:
        """The next forward's batch: current views (N, 3, H, W) float32 in engine order + the keyframes."""
        stamp_ns = int(stamp_ns)
        hw = (int(current_chw.shape[-2]), int(current_chw.shape[-1]))
        reason = self._auto_reset(stamp_ns, hw)
        batch, layout = assemble_window(current_chw, stamp_ns, self.store)
        self._last_stamp_ns, self._hw, self._heard_ns, self._silence_ns = stamp_ns, hw, None, None
        return Window(batch, layout, reason)

    def update(self, window: Window, pred: Prediction, metres_per_unit: float | None = None) -> TemporalStep:
        """Chain the window's prediction, consider its reference view as a keyframe, return the set's outputs."""
        step = self.chain.update(pred, window.layout, metres_per_unit)
        if step.restart is not None and not self._reset_asked:
            # the chain restarted by itself (alignment failed, metric anchor): the keyframes' poses are in the old
            # chain frame, so they go too
            self.store.reset()
            self.reset_counts[step.restart.value] += 1
        self._reset_asked = False
        f = step.chain_per_window_unit
        depth0 = pred.depth[0]
        K0 = pred.K_of(0)
        candidate = Keyframe(window.layout.stamp_ns, window.batch_chw[0], step.T_chain_cam,
                             median_depth(pred) * f, sharpness(window.batch_chw[0]),
                             np.where(valid_mask(depth0), depth0 * np.float32(f), np.nan).astype(np.float32),
                             None if pred.confidence is None else pred.confidence[0].copy(),
                             None if K0 is None else K0.copy())
        decision = self.store.consider(candidate)
        current, _ = split_prediction(pred, window.layout)
        return TemporalStep(in_chain_units(current, step), step, decision, window.layout)
