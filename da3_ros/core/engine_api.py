"""What the core needs of an engine: the batch it takes, what its variant predicts, the calls it answers.

The engines (``da3_ros.engines``) implement ``DepthEngine``; the core (rig, per-set processor) only calls it,
so it never imports a runtime.
"""
from __future__ import annotations

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

    def __post_init__(self) -> None:
        n = len(self.images_rgb)
        for name in ("K_cam", "T_cam_world"):
            a = getattr(self, name)
            want = (n, 3, 3) if name == "K_cam" else (n, 4, 4)
            if a is not None and np.shape(a) != want:
                raise ValueError(f"{name} must have shape {want}, got {np.shape(a)}")
        if self.T_cam_world is not None and (self.K_cam is None or not np.isfinite(self.K_cam).all()):
            raise ValueError("pose conditioning needs every view's intrinsics: T_cam_world given without K_cam "
                             "for all views")


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
    """One forward over a set of views (``da3_ros.engines.Engine`` and its backends)."""

    variant: VariantInfo
    label: str
    backend: str
    trained: bool
    process_res: int
    process_res_method: str
    mixed_resolution: str
    ref_view_strategy: str

    def infer(self, batch: FrameBatch) -> Prediction:
        """One forward over every view of ``batch``."""

    def health(self) -> tuple[bool, dict[str, str]]:
        """Whether the engine can run sets now, and what /diagnostics shows about it."""

    def prepare_ahead(self, n_views: int, hw: tuple[int, int], conditioned: bool) -> None:
        """Get ready for sets of ``n_views`` views (a fixed-shape engine exports that graph in the background)."""

    def describe(self) -> str:
        """'<backend> (device <device>, precision <precision>)'."""
