"""The result of one multi-view forward, with units and frames in the names."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """N views at the network resolution (H, W).

    Frames follow OpenCV / ROS optical frames (x right, y down, z forward). ``T_cam_world`` maps points from
    the set's world frame to each camera (upstream's "extrinsics", world-to-camera); without pose conditioning
    the world frame is the reference view's camera. Translations share the depth's units.
    """

    depth: np.ndarray  # (N, H, W) float32; metres if is_metric else relative units
    is_metric: bool
    K_proc: np.ndarray | None  # (N, 3, 3) float64 intrinsics of the depth images; None when unknown for all
    # views, an all-NaN matrix for a view whose K is unknown (see ``K_of``)
    K_source: str  # "camera" (mapped from camera_info), "model" (estimated by the network), "camera+model"
    # (each view its camera's K where it has one, the model's estimate for the others) or "none"
    confidence: np.ndarray | None = None  # (N, H, W) float32, higher is better
    sky_mask: np.ndarray | None = None  # (N, H, W) bool, True where the model sees sky
    T_cam_world: np.ndarray | None = None  # (N, 4, 4) float64 world-to-camera
    depth_scale: np.ndarray | None = None  # (N,) factor already applied to the raw network depth
    rgb_proc: np.ndarray | None = None  # (N, H, W, 3) uint8, the images as the network saw them
    timing_s: dict[str, float] = field(default_factory=dict)  # seconds per stage: preprocess, forward, postprocess
    # Metric scale of the set (da3_ros.core.metric_scale): where metres come from (metric_model, nested, rig, none),
    # the scale measured on this set (NaN: not measured) and the scale applied (after the temporal filter).
    scale_source: str = "none"
    scale_raw: float = float("nan")
    scale: float = float("nan")

    def K_of(self, i: int) -> np.ndarray | None:
        """View i's (3, 3) intrinsics at the network resolution; None when unknown."""
        if self.K_proc is None or not np.isfinite(self.K_proc[i]).all():
            return None
        return self.K_proc[i]

    @property
    def num_views(self) -> int:
        return int(self.depth.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.depth.shape[1]), int(self.depth.shape[2])

    def reordered(self, order: list[int]) -> "Prediction":
        """The same prediction with views permuted: view i of the result is view order[i] of this one."""
        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[order]
        return dataclasses.replace(
            self, depth=self.depth[order], K_proc=take(self.K_proc), confidence=take(self.confidence),
            sky_mask=take(self.sky_mask), T_cam_world=take(self.T_cam_world), depth_scale=take(self.depth_scale),
            rgb_proc=take(self.rgb_proc), timing_s=dict(self.timing_s))
