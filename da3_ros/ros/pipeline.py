"""The per-set policy for ROS messages: one set of Image (+ CameraInfo) messages -> ``CameraFrame`` -> the core.

The node and ``da3-ros bag`` call ``SetProcessor.process`` with the messages of a set; it converts them
(images to RGB, camera_info to a ``Calibration``) and hands the plain frames to the ROS-free
``core.processor.FrameSetProcessor``, which holds the policy. Knows message types, never rclpy.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sensor_msgs.msg import CameraInfo, Image

from da3_ros.core.config import CoreConfig
from da3_ros.core.range_scale import RangeSet
from da3_ros.core.processor import Calibration, CameraFrame, DropReason, Dropped, FrameSetProcessor, Processed
from da3_ros.core.rig import Rig
from da3_ros.core.static_tf import StaticTfBuffer
from da3_ros.ros import conversions as conv


def camera_frame(image: Image, info: CameraInfo | None, info_pending: bool) -> CameraFrame:
    """A camera's image message (and its latest camera_info) as a plain frame; ConversionError if unreadable.

    A camera_info that cannot be used (all-zero K: uncalibrated, NaN) is kept as the reason, said by the core.
    """
    calibration, problem = None, ""
    if info is not None:
        try:
            K, hw = conv.camera_info_to_K(info)
            calibration = Calibration(K, hw, info.distortion_model, tuple(float(d) for d in info.d))
        except conv.ConversionError as exc:
            problem = str(exc)
    return CameraFrame(conv.image_to_rgb(image), conv.stamp_to_ns(image.header.stamp), image.header.frame_id,
                       calibration, problem, info is None and info_pending)


class SetProcessor:
    """One synchronised set of Image messages (+ CameraInfo, /tf_static) -> ``Processed`` or ``Dropped``.

    The policy is ``core.processor.FrameSetProcessor``'s (see there for ``warn`` and ``prepare_fallback``).
    """

    def __init__(self, rig: Rig, cfg: CoreConfig, static_tf: StaticTfBuffer,
                 warn: Callable[[str], None] | None = None, prepare_fallback: bool = False):
        self.frames = FrameSetProcessor(rig, cfg, static_tf, warn, prepare_fallback)

    @property
    def rig(self) -> Rig:
        """The rig every set runs through."""
        return self.frames.rig

    @property
    def cfg(self) -> CoreConfig:
        """The policy's settings (a runtime parameter set replaces them; the next set uses them)."""
        return self.frames.cfg

    @cfg.setter
    def cfg(self, cfg: CoreConfig) -> None:
        self.frames.cfg = cfg

    @property
    def without_K(self) -> list[str]:
        """Cameras of the last set without any intrinsics (no camera_info, no hfov_deg, none estimated)."""
        return self.frames.without_K

    def process(self, images: Sequence[Image | None], infos: Sequence[CameraInfo | None],
                info_pending: Sequence[bool], wants_nav: bool = False,
                ranges: RangeSet | None = None) -> Processed | Dropped:
        """Run one set of Image messages (camera order) through the policy and the rig.

        ``infos[i]``: camera i's latest CameraInfo or None; ``info_pending[i]``: its camera_info is being
        published (live) or recorded (bag) but has not arrived yet. ``images[i]`` is None for a camera left
        out of the set (silent): the others run as a smaller rig (``Processed.cameras`` says which).
        ``ranges``: the range sensors' messages picked for this set (``ros.range_inputs``), if any.
        """
        t0 = time.perf_counter()
        try:
            frames = [None if m is None else camera_frame(m, info, pending)
                      for m, info, pending in zip(images, infos, info_pending)]
        except conv.ConversionError as exc:
            return Dropped(DropReason.BAD_INPUT, str(exc))
        convert_s = time.perf_counter() - t0
        done = self.frames.process(frames, wants_nav, ranges)
        if isinstance(done, Processed):
            done.timing_s = {"convert": convert_s, **done.timing_s}
        return done
