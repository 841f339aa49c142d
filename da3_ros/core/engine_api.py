"""What the core needs of an engine: the batch it takes, what its variant predicts, the calls it answers.

The engines (``da3_ros.engines``) implement ``DepthEngine``; the core (rig, per-set processor) only calls it,
so it never imports a runtime.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np

from da3_ros.core.prediction import Prediction


class DepthKind(str, Enum):
    """What the raw depth output of a variant means."""

    RELATIVE = "relative"  # up to an unknown scale (any-view and mono models)
    METRIC_FOCAL = "metric_focal"  # metres = focal_px_at_network_res * output / 300 (DA3METRIC)
    METRIC = "metric"  # already metres (nested: any-view aligned to the metric branch inside the net)


@dataclass
class FrameBatch:
    """One synchronized set: N RGB images and, when known, their cameras.

    ``K_cam``: (N, 3, 3) intrinsics at the images' own resolution; a view whose K is unknown has an all-NaN
    matrix (its K is then the model's estimate, while the others keep their own). ``T_cam_world``: (N, 4, 4)
    known rig extrinsics (world-to-camera, any consistent units); given with every view's K, they condition
    the model.
    """

    images_rgb: list[np.ndarray]
    K_cam: np.ndarray | None = None
    T_cam_world: np.ndarray | None = None
    # who each view is (its camera's name), for an engine that keeps per-view state over sets (the metric pair's
    # last sky per camera); None: not said (views are then known by their place in the batch)
    view_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.images_rgb)
        if self.view_ids is not None and len(self.view_ids) != n:
            raise ValueError(f"view_ids names {len(self.view_ids)} views, the batch has {n}")
        for name in ("K_cam", "T_cam_world"):
            a = getattr(self, name)
            want = (n, 3, 3) if name == "K_cam" else (n, 4, 4)
            if a is not None and np.shape(a) != want:
                raise ValueError(f"{name} must have shape {want}, got {np.shape(a)}")
        if self.T_cam_world is not None and (self.K_cam is None or not np.isfinite(self.K_cam).all()):
            raise ValueError("pose conditioning needs every view's intrinsics: T_cam_world given without K_cam "
                             "for all views")


@dataclass(frozen=True)
class PreparedBatch:
    """A FrameBatch as the network takes it: every view at one network size, before the forward.

    ``Engine.prepare_batch`` makes it; ``with_views`` appends views already at the network size (the temporal
    window's keyframes, ``da3_ros.core.temporal``) after the batch's own; ``Engine.run_batch`` runs it.
    """

    images_chw: np.ndarray  # (V, 3, H, W) float32, normalised as the network takes it; V = N + appended
    K_proc: np.ndarray | None  # (V, 3, 3) at the network size, all-NaN for an unknown one; None: none known
    T_cam_world: np.ndarray | None  # (N, 4, 4) the batch's known poses (conditioning), as given
    rgb_proc: np.ndarray  # (N, H, W, 3) uint8, the batch's own images as the network sees them
    preprocess_s: float = 0.0
    view_ids: tuple[str | None, ...] | None = None  # FrameBatch.view_ids; an appended view's is None

    @property
    def n_views(self) -> int:
        return int(self.images_chw.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.images_chw.shape[2]), int(self.images_chw.shape[3])

    def with_views(self, images_chw: np.ndarray, K_proc: np.ndarray | None) -> PreparedBatch:
        """A copy with ``images_chw`` (M, 3, H, W) appended; ``K_proc`` (M, 3, 3) or None (unknown)."""
        extra = np.asarray(images_chw, np.float32)
        if extra.shape[0] == 0:
            return self
        if extra.ndim != 4 or extra.shape[1] != 3 or extra.shape[2:] != self.images_chw.shape[2:]:
            raise ValueError(f"appended views must be (M, 3, {self.hw[0]}, {self.hw[1]}), got {extra.shape}")
        if self.T_cam_world is not None:
            raise ValueError("appended views have no known pose: a pose-conditioned batch takes none")
        m = extra.shape[0]
        K = None
        if self.K_proc is not None or K_proc is not None:
            own = self.K_proc if self.K_proc is not None else np.full((self.n_views, 3, 3), np.nan)
            added = np.full((m, 3, 3), np.nan) if K_proc is None else np.asarray(K_proc, np.float64)
            K = np.concatenate([own, added])
        ids = None if self.view_ids is None else (*self.view_ids, *[None] * m)
        return dataclasses.replace(self, images_chw=np.concatenate([self.images_chw, extra]), K_proc=K, view_ids=ids)


class VariantInfo(Protocol):
    """What a DA3 architecture predicts (``da3_ros.models.registry.Variant``)."""

    @property
    def name(self) -> str: ...
    @property
    def depth_kind(self) -> DepthKind: ...
    @property
    def has_pose(self) -> bool: ...
    @property
    def has_sky(self) -> bool: ...


class DepthEngine(Protocol):
    """One forward over a set of views (``da3_ros.engines.Engine`` and its backends).

    What the core reads is read-only here (an engine may hold a narrower type, e.g. its variant's dataclass);
    ``da3_ros/engines/contract.py`` makes the type check prove that every engine class satisfies it.
    """

    @property
    def variant(self) -> VariantInfo: ...
    @property
    def label(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def trained(self) -> bool: ...
    @property
    def process_res(self) -> int: ...
    @property
    def process_res_method(self) -> str: ...
    @property
    def mixed_resolution(self) -> str: ...
    @property
    def ref_view_strategy(self) -> str: ...

    def infer(self, batch: FrameBatch) -> Prediction:
        """One forward over every view of ``batch`` (``run_batch(prepare_batch(batch))``)."""

    def prepare_batch(self, batch: FrameBatch) -> PreparedBatch:
        """``batch`` at the network size, ready for ``run_batch`` (views may be appended in between)."""

    def run_batch(self, prepared: PreparedBatch) -> Prediction:
        """One forward over every view of ``prepared``; the Prediction has one view per view of it."""

    def health(self) -> tuple[bool, dict[str, str]]:
        """Whether the engine can run sets now, and what /diagnostics shows about it."""

    def prepare_ahead(self, shapes: Sequence[tuple[int, bool]], hw: tuple[int, int]) -> None:
        """Get ready for sets of these (views, conditioned) at network size ``hw``, the most urgent first.

        A fixed-shape engine exports those graphs in the background.
        """

    def describe(self) -> str:
        """'<backend> (device <device>, precision <precision>)'."""
