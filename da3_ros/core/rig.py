"""A camera rig around an engine: reference camera pinned, optional pose conditioning, poses in its frame.

ROS-free. The reference camera goes first into the network with ``ref_view_strategy="first"``, so DA3's world
frame is always that camera, not whichever view upstream's automatic strategy would pick.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from da3_ros.core.engine_api import DepthEngine, FrameBatch
from da3_ros.core.geometry import invert_T, relative_poses
from da3_ros.core.metric_scale import FITTED_SOURCES, ScaleFilter, ScaleFilterConfig, apply_scale
from da3_ros.core.prediction import Prediction
from da3_ros.core.range_scale import RangeFit, RangeInput, range_scaled
from da3_ros.core.stamps import NS_PER_S
from da3_ros.core.temporal.tracker import TemporalStep, TemporalTracker


@dataclass(frozen=True)
class RigResult:
    """One set's prediction in camera order, and every camera's pose in the reference camera's frame."""

    prediction: Prediction
    ref_index: int
    T_ref_cam: np.ndarray | None  # (N, 4, 4) in depth units; None for models without camera heads
    conditioned: bool  # known rig extrinsics were given to the model
    temporal: TemporalStep | None = None  # the window's chain step (temporal.keyframes > 0), else None
    window_views: int = 0  # views of the forward: the set's N plus the keyframes joined to it
    range_fit: RangeFit | None = None  # the set's scale from range sensors (metric.range_topics), else None


class Rig:
    """Runs one synchronized set of N images through ONE forward of ``engine``."""

    def __init__(self, engine: DepthEngine, ref_index: int = 0, T_ref_cam_known: np.ndarray | None = None,
                 scale_filter: ScaleFilterConfig | None = None, temporal: TemporalTracker | None = None):
        if engine.ref_view_strategy != "first":
            raise ValueError("a Rig pins its reference camera: build the engine with ref_view_strategy='first'")
        self.engine = engine
        self.ref_index = ref_index
        self.T_ref_cam_known = None if T_ref_cam_known is None else np.asarray(T_ref_cam_known, np.float64)
        self.scale = ScaleFilter(scale_filter or ScaleFilterConfig())  # metric scale over time (pair, nested, rig)
        if temporal is not None and not engine.variant.has_pose:
            raise ValueError(f"temporal.keyframes > 0 needs a model with camera heads (poses); "
                             f"{engine.variant.name} has none: use da3-small/base/large/giant or temporal.keyframes 0")
        self.temporal = temporal  # keyframes + window chain of the reference camera; None: each set alone

    def subset(self, cameras: list[int]) -> Rig:
        """The rig of only ``cameras`` (indices, ascending), e.g. while the others are silent.

        Same engine, scale filter and (while the reference camera is in it) temporal tracker. Its reference
        is this rig's when present, else the first camera left, whose sets run without the window (the
        keyframes are the reference camera's); known extrinsics are re-expressed in that reference's frame.
        """
        ref = self.ref_index if self.ref_index in cameras else cameras[0]
        known = None
        if self.T_ref_cam_known is not None:
            T = self.T_ref_cam_known[cameras]
            known = invert_T(T[cameras.index(ref)])[None] @ T
        sub = Rig(self.engine, cameras.index(ref), known,
                  temporal=self.temporal if ref == self.ref_index else None)
        sub.scale = self.scale  # one scale over time for the rig, whichever cameras a set has
        return sub

    def takes_conditioning(self, n_views: int) -> bool:
        """Whether a set of ``n_views`` is pose-conditioned when poses and every K are known: 2 cameras or more.

        A lone camera's pose is the identity: it tells the model nothing about a rig, yet conditioning would
        change its depth (and ``da3-ros infer`` on the same image never conditions). One rule for the node,
        the offline commands and a silent camera's subset.

        With a temporal window no set is conditioned: the keyframes joined to it have no known pose (their
        poses are what the chain estimates), and a batch is conditioned on every view's pose or on none.
        """
        return n_views >= 2 and self.engine.variant.has_pose and self.temporal is None

    def conditions(self, K_cam: list[np.ndarray | None], T_ref_cam_known: np.ndarray | None = None) -> bool:
        """Whether a set with these intrinsics (camera order) runs pose-conditioned; one rule for all callers.

        Poses known (``T_ref_cam_known``, else the rig's own), every K known and finite, and a set that takes
        conditioning (``takes_conditioning``).
        """
        known = self.T_ref_cam_known if T_ref_cam_known is None else T_ref_cam_known
        return (known is not None and self.takes_conditioning(len(K_cam))
                and all(K is not None and np.isfinite(K).all() for K in K_cam))

    def process(self, images_rgb: list[np.ndarray], K_cam: list[np.ndarray | None],
                T_ref_cam_known: np.ndarray | None = None, stamp_s: float | None = None,
                stamp_ns: int | None = None, view_ids: list[str] | None = None,
                ranges: RangeInput | None = None) -> RigResult:
        """Images and (possibly missing) intrinsics in camera order -> RigResult in camera order.

        ``T_ref_cam_known`` (N, 4, 4), e.g. from /tf_static, overrides the extrinsics given at construction.
        ``stamp_ns`` (or ``stamp_s``): the set's stamp, which bounds how fast the metric scale may change
        (default: this machine's monotonic clock) and orders the temporal window (needed with one).
        ``view_ids``: each camera's name, in camera order (``FrameBatch.view_ids``: per-camera engine state).
        ``ranges``: the set's range returns per camera (``metric.range_topics``): metres from them.
        """
        if stamp_ns is not None:
            stamp_s = stamp_ns / NS_PER_S
        known = self.T_ref_cam_known if T_ref_cam_known is None else np.asarray(T_ref_cam_known, np.float64)
        n = len(images_rgb)
        if not 0 <= self.ref_index < n:
            raise ValueError(f"reference index {self.ref_index} out of range for {n} cameras")
        order = [self.ref_index] + [i for i in range(n) if i != self.ref_index]
        inverse = list(np.argsort(order))
        K = None  # each camera its own K; an unknown one NaN (the model's estimate), never all for one missing
        if any(k is not None for k in K_cam):
            K = np.stack([np.full((3, 3), np.nan) if K_cam[i] is None else np.asarray(K_cam[i], np.float64)
                          for i in order])
        T_cam_world = None
        if self.conditions(K_cam, known):
            assert known is not None
            T_cam_world = invert_T(known[order])  # world = reference camera frame
        batch = FrameBatch([images_rgb[i] for i in order], K, T_cam_world,
                           None if view_ids is None else tuple(view_ids[i] for i in order))
        if ranges is not None:
            ranges = RangeInput([ranges.points_cam[i] for i in order], ranges.cfg, ranges.offset_s, ranges.problem)
        pred, step, views, fit = self._forward(batch, stamp_s, stamp_ns, ranges)
        pred = pred.reordered(inverse)
        T_ref_cam = None if pred.T_cam_world is None else relative_poses(pred.T_cam_world, self.ref_index)
        return RigResult(pred, self.ref_index, T_ref_cam, T_cam_world is not None, step, views, fit)

    def _forward(self, batch: FrameBatch, stamp_s: float | None, stamp_ns: int | None,
                 ranges: RangeInput | None) -> tuple[Prediction, TemporalStep | None, int, RangeFit | None]:
        """One forward (the set alone, or its temporal window), the metric scale applied; reference first."""
        tracker = self.temporal
        n = len(batch.images_rgb)
        if tracker is None:
            pred, fit = self._ranged(self.engine.infer(batch), ranges, n)
            return self._scaled(pred, stamp_s), None, n, fit
        if stamp_ns is None:
            raise ValueError("a temporal window needs each set's stamp (stamp_ns)")
        prepared = self.engine.prepare_batch(batch)
        window = tracker.window(prepared.images_chw, stamp_ns)
        keyframes = window.batch_chw[prepared.n_views:]
        # the keyframes are the reference camera's own views at the same network size: its K is theirs
        K_ref = None if prepared.K_proc is None else np.repeat(prepared.K_proc[:1], len(keyframes), axis=0)
        pred, fit = self._ranged(self.engine.run_batch(prepared.with_views(keyframes, K_ref)), ranges, n)
        pred = self._scaled(pred, stamp_s)
        step = tracker.update(window, pred, 1.0 if pred.is_metric else None)
        return step.current, step, window.layout.n_views, fit

    @staticmethod
    def _ranged(pred: Prediction, ranges: RangeInput | None, views: int) -> tuple[Prediction, RangeFit | None]:
        """The range sensors' metres on the set's own ``views`` (not the window's keyframes), when configured."""
        return (pred, None) if ranges is None else range_scaled(pred, ranges, views)

    def _scaled(self, pred: Prediction, stamp_s: float | None) -> Prediction:
        if pred.scale_source in FITTED_SOURCES:
            t_s = time.monotonic() if stamp_s is None else stamp_s
            pred = apply_scale(pred, self.scale.update(pred.scale_raw, t_s))
        return pred
