"""The per-set policy shared by the node and the offline commands: messages of one set in, SetOutputs out.

camera_info validation -> K, frame ids, waiting for camera_info / pose conditioning, image conversion,
``Rig.process`` and the lazily built ``SetOutputs``. Knows ROS message types, never rclpy: the live node
(``node.py``) and ``da3-ros bag`` / ``da3-ros media`` call the same ``SetProcessor.process``, so offline
results are what the node would publish for the same set.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from da3_ros import conversions as conv
from da3_ros.outputs import OutputConfig, SetOutputs, nav_inputs
from da3_ros.rig import Rig
from da3_ros.static_tf import StaticTfBuffer

POSE_CONDITIONING = ("auto", "params", "tf_static", "off")


class DropReason(str, Enum):
    """Why a synchronised set produced no outputs."""

    WAITING_FOR_CAMERA_INFO = "waiting_for_camera_info"  # camera_info is published but has not arrived yet
    WAITING_FOR_CONDITIONING = "waiting_for_conditioning"  # conditioning configured; K or /tf_static missing
    BAD_INPUT = "bad_input"  # an image the node cannot convert (encoding, sizes)


@dataclass(frozen=True)
class Dropped:
    """A set that was not processed, and why (``detail`` names the value and the fix)."""

    reason: DropReason
    detail: str


@dataclass
class Processed:
    """A processed set: its outputs and the seconds spent per stage (convert + the engine's stages)."""

    outputs: SetOutputs
    timing_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CoreConfig:
    """What the per-set policy needs from the node's parameters (see ``da3_ros.params``)."""

    camera_names: list[str]
    frame_id_overrides: list[str]  # cameras.<name>.frame_id; "" = the image header's frame_id
    pose_conditioning: str
    out_cfg: OutputConfig
    nav_cfg: tuple | None = None  # nav_configs(...) of the node; None = no navigation outputs

    def __post_init__(self):
        if self.pose_conditioning not in POSE_CONDITIONING:
            raise ValueError(f"pose_conditioning must be one of {POSE_CONDITIONING}, got {self.pose_conditioning!r}")
        if len(self.frame_id_overrides) != len(self.camera_names):
            raise ValueError(f"{len(self.frame_id_overrides)} frame_id overrides for cameras {self.camera_names}")


class SetProcessor:
    """One synchronised set of Image messages (+ CameraInfo, /tf_static) -> ``Processed`` or ``Dropped``.

    ``warn`` receives non-fatal notes (e.g. a camera_info whose size does not match its images).
    """

    def __init__(self, rig: Rig, cfg: CoreConfig, static_tf: StaticTfBuffer,
                 warn: Callable[[str], None] | None = None):
        self.rig = rig
        self.cfg = cfg
        self.static_tf = static_tf
        self._warn = warn or (lambda text: None)

    def frame_ids(self, images: Sequence) -> list[str]:
        """The optical frame of each camera: parameter override, else the header's, else <camera>_optical_frame."""
        return [override or m.header.frame_id or f"{c}_optical_frame"
                for c, override, m in zip(self.cfg.camera_names, self.cfg.frame_id_overrides, images)]

    def intrinsics(self, i: int, image, info) -> tuple[np.ndarray | None, tuple[str, list[float]] | None]:
        """K and (distortion model, D) of camera i from its camera_info; (None, None) if absent or unusable."""
        if info is None:
            return None, None
        try:
            K, hw = conv.camera_info_to_K(info)
        except conv.ConversionError:
            return None, None
        if hw != (image.height, image.width):
            self._warn(f"{self.cfg.camera_names[i]}: camera_info is {hw}, image {image.height}x{image.width}; "
                       "ignoring its K")
            return None, None
        return K, (info.distortion_model, list(info.d))

    def conditioning_required(self) -> bool:
        """Explicitly configured conditioning (parameters or tf_static) for a model that takes it."""
        return self.rig.engine.variant.has_pose and (
            self.rig.T_ref_cam_known is not None or self.cfg.pose_conditioning == "tf_static")

    def tf_extrinsics(self, frame_ids: list[str]) -> np.ndarray | None:
        """Known rig extrinsics from /tf_static (T_ref_cam per camera), when every camera is connected."""
        if self.cfg.pose_conditioning not in ("auto", "tf_static") or self.rig.T_ref_cam_known is not None:
            return None
        ref_frame = frame_ids[self.rig.ref_index]
        Ts = [self.static_tf.lookup(ref_frame, f) for f in frame_ids]
        if any(T is None for T in Ts):
            return None
        return np.stack([T for T in Ts if T is not None])

    def process(self, images: Sequence, infos: Sequence, info_pending: Sequence[bool],
                wants_nav: bool = False) -> Processed | Dropped:
        """Run one set of Image messages (camera order) through the node's policy and the rig.

        ``infos[i]``: camera i's latest CameraInfo or None; ``info_pending[i]``: its camera_info is being
        published (live) or recorded (bag) but has not arrived yet.
        """
        Ks, distortion = zip(*(self.intrinsics(i, m, info) for i, (m, info) in enumerate(zip(images, infos))))
        frame_ids = self.frame_ids(images)
        if any(info is None and pending for info, pending in zip(infos, info_pending)):
            # the camera's K beats the model's guess, and switching K between sets would make the clouds jump
            missing = [c for c, info, p in zip(self.cfg.camera_names, infos, info_pending) if info is None and p]
            return Dropped(DropReason.WAITING_FOR_CAMERA_INFO, f"camera_info of {missing} has not arrived yet")
        known = self.tf_extrinsics(frame_ids)
        if self.conditioning_required() and (known is None and self.rig.T_ref_cam_known is None
                                             or any(K is None for K in Ks)):
            # Mixing conditioned and unconditioned sets would make the poses jump between two frames of reference
            return Dropped(DropReason.WAITING_FOR_CONDITIONING,
                           "pose conditioning is configured but camera_info or the /tf_static path between "
                           f"{frame_ids} is missing; waiting")
        t0 = time.perf_counter()
        try:
            rgb = [conv.image_to_rgb(m) for m in images]
        except conv.ConversionError as exc:
            return Dropped(DropReason.BAD_INPUT, str(exc))
        t1 = time.perf_counter()
        result = self.rig.process(rgb, list(Ks), known)
        nav = nav_inputs(self.cfg.nav_cfg, self.static_tf, frame_ids) if wants_nav and self.cfg.nav_cfg else None
        out = SetOutputs(result, list(self.cfg.camera_names), frame_ids, [m.header for m in images],
                         self.cfg.out_cfg, self.rig.engine.label, list(distortion), nav)
        return Processed(out, {"convert": t1 - t0, **result.prediction.timing_s})
