"""The per-set policy shared by the node and the offline commands: messages of one set in, SetOutputs out.

camera_info validation -> K, frame ids, waiting for camera_info / pose conditioning, image conversion,
``Rig.process`` and the lazily built ``SetOutputs``. Knows ROS message types, never rclpy: the live node
(``node.py``) and ``da3-ros bag`` / ``da3-ros media`` call the same ``SetProcessor.process``, so offline
results are what the node would publish for the same set.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from da3_ros.ros import conversions as conv
from da3_ros.core import geometry as geo
from da3_ros.core import preprocess
from da3_ros.models.registry import DepthKind
from da3_ros.core.config import CoreConfig
from da3_ros.ros.outputs import SetOutputs, nav_inputs
from da3_ros.core.rig import Rig
from da3_ros.core.static_tf import StaticTfBuffer

_LOG = logging.getLogger(__name__)
CAMERA_INFO_WAIT_S = 5.0  # an advertised camera_info that never arrives: go on without it after this


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
    cameras: list[int] = field(default_factory=list)  # the rig's cameras in this set (outputs index them 0..)


OUT_OF_MEMORY_SIGNS = ("can't allocate memory", "out of memory", "failed to allocate memory", "bad_alloc")


def failure_text(exc: BaseException) -> str:
    """What to log for a set that failed: out of memory said as such, with what to change; else the error."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or any(sign in str(exc).lower() for sign in OUT_OF_MEMORY_SIGNS):
        return (f"out of memory in this set ({text.splitlines()[0][:200]}): the set is dropped; fewer cameras, a "
                "lower process_res or a smaller model need less")
    return text


class SetProcessor:
    """One synchronised set of Image messages (+ CameraInfo, /tf_static) -> ``Processed`` or ``Dropped``.

    ``warn`` receives non-fatal notes, each once (e.g. a camera_info whose size does not match its images).
    ``prepare_fallback``: after the first set, export a fixed-shape engine's (N-1)-view graph in the background
    (the live node, whose cameras can go silent); the offline commands take complete sets and leave it False.
    """

    def __init__(self, rig: Rig, cfg: CoreConfig, static_tf: StaticTfBuffer,
                 warn: Callable[[str], None] | None = None, prepare_fallback: bool = False):
        self.rig = rig
        self.cfg = cfg
        self.static_tf = static_tf
        self._warn = warn or (lambda text: None)
        self._said: set[str] = set()  # each note is said once: a camera's problem persists over sets
        self._info_ignored: list[str] = []  # cameras of the current set whose camera_info size is not the image's
        self._info_wait_since: float | None = None  # stamp of the first set that waited for camera_info
        self._subsets: dict[tuple[int, ...], SetProcessor] = {}  # per set of present cameras (silent ones out)
        self._fallback_prepared = not prepare_fallback  # the node's ask: bag and media take complete sets
        self._sizes_seen: set[tuple[tuple[int, int], ...]] = set()  # size combinations already said
        self.without_K: list[str] = []  # cameras of the last set with no intrinsics at all (no camera_info,
        # no hfov_deg, a model that estimates none): their camera_info and clouds are not published

    def frame_ids(self, images: Sequence) -> list[str]:
        """The optical frame of each camera: parameter override, else the header's, else <camera>_optical_frame."""
        return [override or m.header.frame_id or f"{c}_optical_frame"
                for c, override, m in zip(self.cfg.camera_names, self.cfg.frame_id_overrides, images)]

    def intrinsics(self, i: int, image, info) -> tuple[np.ndarray | None, tuple[str, list[float]] | None]:
        """K and (distortion model, D) of camera i: its camera_info, else its hfov_deg; (None, None) if neither."""
        if info is not None:
            try:
                K, hw = conv.camera_info_to_K(info)
                if hw == (image.height, image.width):
                    return K, (info.distortion_model, list(info.d))
                self._say(f"{self.cfg.camera_names[i]}: camera_info is {hw}, image {image.height}x{image.width}; "
                          "ignoring its K")
                self._info_ignored.append(self.cfg.camera_names[i])
            except conv.ConversionError as exc:  # all-zero (uncalibrated) or NaN K: said once, not used
                self._say(f"{self.cfg.camera_names[i]}: {exc}; ignoring its K")
        hfov = self.cfg.hfov_deg[i] if i < len(self.cfg.hfov_deg) else 0.0
        if hfov:
            return geo.pinhole_K(image.width, image.height, hfov), None
        return None, None

    def conditioning_required(self) -> bool:
        """Explicitly configured conditioning (parameters or tf_static) for a rig that takes it (>= 2 cameras)."""
        return self.rig.takes_conditioning(len(self.cfg.camera_names)) and (
            self.rig.T_ref_cam_known is not None or self.cfg.pose_conditioning == "tf_static")

    def tf_extrinsics(self, frame_ids: list[str]) -> np.ndarray | None:
        """Known rig extrinsics from /tf_static (T_ref_cam per camera), when every camera is connected."""
        if (self.cfg.pose_conditioning not in ("auto", "tf_static") or self.rig.T_ref_cam_known is not None
                or not self.rig.takes_conditioning(len(frame_ids))):
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
        published (live) or recorded (bag) but has not arrived yet. ``images[i]`` is None for a camera left
        out of the set (silent): the others run as a smaller rig (``Processed.cameras`` says which).
        """
        present = [i for i, m in enumerate(images) if m is not None]
        if not present:
            return Dropped(DropReason.BAD_INPUT, "a set without any image")
        if len(present) < len(images):
            return self._process_subset(present, images, infos, info_pending, wants_nav)
        self._info_ignored = []
        Ks, distortion = zip(*(self.intrinsics(i, m, info) for i, (m, info) in enumerate(zip(images, infos))))
        frame_ids = self.frame_ids(images)
        t_s = conv.stamp_to_ns(images[self.rig.ref_index].header.stamp) / 1e9  # the set's (reference) stamp
        missing = [c for c, info, p in zip(self.cfg.camera_names, infos, info_pending) if info is None and p]
        if missing:
            # The camera's K beats the model's guess, and switching K between sets would make the clouds jump:
            # wait for an advertised camera_info, but not forever (a driver may advertise and never publish).
            self._info_wait_since = self._info_wait_since if self._info_wait_since is not None else t_s
            if t_s - self._info_wait_since < CAMERA_INFO_WAIT_S:
                return Dropped(DropReason.WAITING_FOR_CAMERA_INFO, f"camera_info of {missing} has not arrived yet")
            self._say(f"camera_info of {missing} is advertised but none arrived in {CAMERA_INFO_WAIT_S:.0f} s of "
                      "images: going on without it")
        else:
            self._info_wait_since = None
        known = self.tf_extrinsics(frame_ids)
        unusable = [c for c, K in zip(self.cfg.camera_names, Ks) if K is None and c in self._info_ignored]
        if self.conditioning_required() and unusable:  # a wrong camera_info will not fix itself: bad input
            return Dropped(DropReason.BAD_INPUT,
                           f"pose conditioning needs the K of {unusable}, whose camera_info size differs from its "
                           "images: fix the camera_info, or set cameras.<name>.hfov_deg, or pose_conditioning: off")
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
        self._note_mixed_sizes([(m.height, m.width) for m in images])
        result = self.rig.process(rgb, list(Ks), known, stamp_s=t_s)
        self._note_missing_K(result)
        nav = nav_inputs(self.cfg.nav_cfg, self.static_tf, frame_ids) if wants_nav and self.cfg.nav_cfg else None
        out = SetOutputs(result, list(self.cfg.camera_names), frame_ids, [m.header for m in images],
                         self.cfg.out_cfg, self.rig.engine.label, list(distortion), nav,
                         reference_camera=self.cfg.camera_names[self.rig.ref_index])
        if not self._fallback_prepared:
            self._fallback_prepared = True
            self.rig.engine.prepare_ahead(len(images) - 1, result.prediction.hw, result.conditioned)
        return Processed(out, {"convert": t1 - t0, **result.prediction.timing_s}, list(range(len(images))))

    def _process_subset(self, present: list[int], images: Sequence, infos: Sequence, info_pending: Sequence[bool],
                        wants_nav: bool) -> Processed | Dropped:
        """A set without the silent cameras: the same policy on the rig of the ``present`` cameras.

        The subset's config is derived from this one at every set, so a runtime parameter change reaches every
        subset at once; its outputs keep the rig's pinned reference camera (TF and points_fused are skipped
        while that camera is silent, see ``SetOutputs.tf_withheld``).
        """
        key = tuple(present)
        if key not in self._subsets:
            sub = SetProcessor(self.rig.subset(present), self.cfg.subset(present), self.static_tf,
                               self._warn)
            sub._said = self._said  # one memory of what was said
            self._subsets[key] = sub
        sub = self._subsets[key]
        sub.cfg = self.cfg.subset(present)
        done = sub.process([images[i] for i in present], [infos[i] for i in present],
                           [info_pending[i] for i in present], wants_nav)
        if isinstance(done, Processed):
            done.cameras = present
            done.outputs.reference_camera = self.cfg.camera_names[self.rig.ref_index]
            self.without_K = sub.without_K
        return done

    def _note_mixed_sizes(self, hws: list[tuple[int, int]]) -> None:
        """Cameras of different sizes: say once per size combination what each keeps of its field of view."""
        engine = self.rig.engine
        if len(set(hws)) < 2 or tuple(hws) in self._sizes_seen:
            return
        self._sizes_seen.add(tuple(hws))
        plans = preprocess.plan_batch(hws, engine.process_res, engine.process_res_method, engine.mixed_resolution)
        parts = []
        for camera, hw, plan in zip(self.cfg.camera_names, hws, plans):
            v, h = preprocess.field_of_view_kept(plan)
            parts.append(f"{camera} {hw[1]}x{hw[0]} -> {plan.proc_hw[1]}x{plan.proc_hw[0]}"
                         + (f" keeping {100 * v:.0f} % of its height, {100 * h:.0f} % of its width" if (v, h) != (1, 1)
                            else " (whole view)"))
        hint = ("; mixed_resolution: stretch keeps every camera's whole view" if engine.mixed_resolution == "crop"
                else " (stretched: pixel aspect changed, intrinsics follow)")
        self._say("cameras of different sizes share one network size: " + "; ".join(parts) + hint)

    def _say(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self._warn(text)

    def _note_missing_K(self, result) -> None:
        """Say once per camera what a camera without intrinsics loses (and remember it for diagnostics)."""
        pred = result.prediction
        self.without_K = [c for i, c in enumerate(self.cfg.camera_names) if pred.K_of(i) is None]
        needs_focal = self.rig.engine.variant.depth_kind is DepthKind.METRIC_FOCAL
        for camera in self.without_K:
            self._say(f"{camera}: no camera_info and no cameras.{camera}.hfov_deg, and "
                           f"{self.rig.engine.variant.name} estimates no intrinsics: its depth is published, its "
                           "camera_info and clouds are not" + (
                               "; depth stays RELATIVE (is_metric false): metres need a focal length"
                               if needs_focal else ""))
