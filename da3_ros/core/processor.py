"""The per-set policy, on plain camera frames: one synchronised set in, a ``SetResult`` (or why not) out.

Intrinsics (camera_info, else ``hfov_deg``, else the model's), frame ids, waiting for an advertised
camera_info or for the configured pose conditioning, the rig of the cameras present, the rig's forward and
the lazily built ``SetResult``. ROS-free: the node and ``da3-ros bag`` / ``media`` turn their messages into
``CameraFrame`` (``da3_ros.ros.frames``) and call the same ``FrameSetProcessor.process``, so offline
results are what the node would publish for the same set.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from da3_ros.core import geometry as geo
from da3_ros.core import preprocess
from da3_ros.core.config import CoreConfig
from da3_ros.core.engine_api import DepthKind
from da3_ros.core.range_scale import RangeSet, into_cameras
from da3_ros.core.results import SetResult, nav_inputs
from da3_ros.core.rig import Rig, RigResult
from da3_ros.core.stamps import NS_PER_S
from da3_ros.core.temporal.keyframes import ResetReason
from da3_ros.core.static_tf import StaticTfBuffer  # the node's and the bag's: a TfBuffer (timed /tf edges too)

_LOG = logging.getLogger(__name__)
CAMERA_INFO_WAIT_S = 5.0  # an advertised camera_info that never arrives: go on without it after this


@dataclass(frozen=True)
class Calibration:
    """A camera's calibration as its camera_info gives it: K (pixels) for images of size ``hw``, distortion."""

    K: np.ndarray
    hw: tuple[int, int]
    distortion_model: str = "plumb_bob"
    D: tuple[float, ...] = ()


@dataclass(frozen=True)
class CameraFrame:
    """One camera's image of a set, with what is known about it when it is processed."""

    rgb: np.ndarray  # (H, W, 3) uint8
    stamp_ns: int
    frame_id: str = ""  # the image's own (header) frame; "" = none given
    calibration: Calibration | None = None  # its latest camera_info, if any
    calibration_problem: str = ""  # a camera_info that could not be used (all-zero K...): said, not used
    calibration_pending: bool = False  # a camera_info is published (or recorded) but has not arrived yet


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
    """A processed set: its result and the seconds spent per stage (convert + the engine's stages)."""

    outputs: SetResult
    timing_s: dict[str, float] = field(default_factory=dict)
    cameras: list[int] = field(default_factory=list)  # the rig's cameras in this set (outputs index them 0..)


OUT_OF_MEMORY_SIGNS = ("can't allocate memory", "out of memory", "failed to allocate memory", "bad_alloc")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether a set failed for memory (Python's MemoryError, or a runtime's allocation failure in its text)."""
    return isinstance(exc, MemoryError) or any(sign in str(exc).lower() for sign in OUT_OF_MEMORY_SIGNS)


def failure_text(exc: BaseException) -> str:
    """What to log for a set that failed: out of memory said as such, with what to change; else the error."""
    text = f"{type(exc).__name__}: {exc}"
    if is_out_of_memory(exc):
        return (f"out of memory in this set ({text.splitlines()[0][:200]}): the set is dropped; fewer cameras, a "
                "lower process_res or a smaller model need less")
    return text


class FrameSetProcessor:
    """One synchronised set of ``CameraFrame`` (camera order; None = a silent camera) -> Processed / Dropped.

    ``warn`` receives non-fatal notes, each once (e.g. a camera_info whose size does not match its images).
    ``prepare_fallback``: after the first set, have a fixed-shape engine export in the background every other
    graph the live node may need (``shapes_ahead``: the temporal window's sizes, each silent camera's subset
    and its window); the offline commands take complete sets.
    """

    def __init__(self, rig: Rig, cfg: CoreConfig, static_tf: StaticTfBuffer,
                 warn: Callable[[str], None] | None = None, prepare_fallback: bool = False):
        self.rig = rig
        self.cfg = cfg
        self.static_tf = static_tf
        self._warn = warn or (lambda text: None)
        self._said: set[str] = set()  # each note is said once: a camera's problem persists over sets
        self._info_ignored: list[str] = []  # cameras of the current set whose camera_info size is not the image's
        self._info_wait_since_ns: int | None = None  # stamp of the first set that waited for camera_info
        self._subsets: dict[tuple[int, ...], FrameSetProcessor] = {}  # per set of present cameras
        self._ahead_prepared = not prepare_fallback  # the live node asks for its other graphs after its first set
        self._reference_silent = False  # the temporal window was reset for the reference camera's silence
        self._sizes_seen: set[tuple[tuple[int, int], ...]] = set()  # size combinations already said
        self.without_K: list[str] = []  # cameras of the last set with no intrinsics at all (no camera_info,
        # no hfov_deg, a model that estimates none): their camera_info and clouds are not published

    def frame_ids(self, frames: Sequence[CameraFrame]) -> list[str]:
        """The optical frame of each camera: parameter override, else the image's, else <camera>_optical_frame."""
        return [override or f.frame_id or f"{c}_optical_frame"
                for c, override, f in zip(self.cfg.camera_names, self.cfg.frame_id_overrides, frames)]

    def intrinsics(self, i: int, frame: CameraFrame) -> tuple[np.ndarray | None, tuple[str, list[float]] | None]:
        """K and (distortion model, D) of camera i: its camera_info, else its hfov_deg; (None, None) if neither."""
        camera, (h, w) = self.cfg.camera_names[i], frame.rgb.shape[:2]
        cal = frame.calibration
        if frame.calibration_problem:  # all-zero (uncalibrated) or NaN K: said once, not used
            self._say(f"{camera}: {frame.calibration_problem}; ignoring its K")
        elif cal is not None and cal.hw == (h, w):
            return cal.K, (cal.distortion_model, list(cal.D))
        elif cal is not None:
            self._say(f"{camera}: camera_info is {cal.hw}, image {h}x{w}; ignoring its K")
            self._info_ignored.append(camera)
        hfov = self.cfg.hfov_deg[i] if i < len(self.cfg.hfov_deg) else 0.0
        if hfov:
            return geo.pinhole_K(w, h, hfov), None
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

    def process(self, frames: Sequence[CameraFrame | None], wants_nav: bool = False,
                ranges: RangeSet | None = None) -> Processed | Dropped:
        """Run one set through the policy and the rig.

        A camera left out (None: silent) is skipped: the others run as a smaller rig (``Processed.cameras``
        says which). ``ranges``: the range messages for this set (``metric.range_topics``), in their frames.
        """
        present = [i for i, f in enumerate(frames) if f is not None]
        if not present:
            return Dropped(DropReason.BAD_INPUT, "a set without any image")
        if len(present) < len(frames):
            return self._process_subset(present, frames, wants_nav, ranges)
        self._reference_silent = False
        full = [f for f in frames if f is not None]
        self._info_ignored = []
        Ks, distortion = zip(*(self.intrinsics(i, f) for i, f in enumerate(full)))
        frame_ids = self.frame_ids(full)
        waiting = self._camera_info_wait(full)
        if waiting is not None:
            return waiting
        known = self.tf_extrinsics(frame_ids)
        blocked = self._conditioning_blocked(list(Ks), known, frame_ids)
        if blocked is not None:
            return blocked
        self._note_mixed_sizes([(int(f.rgb.shape[0]), int(f.rgb.shape[1])) for f in full])
        stamp_ns = full[self.rig.ref_index].stamp_ns  # the set's (reference) stamp
        range_input = None if ranges is None else into_cameras(ranges, frame_ids, self.static_tf.lookup)
        result = self.rig.process([f.rgb for f in full], list(Ks), known, stamp_ns=stamp_ns,
                                  view_ids=list(self.cfg.camera_names), ranges=range_input)
        self._note_missing_K(result)
        if not self._ahead_prepared:
            self._ahead_prepared = True
            self.rig.engine.prepare_ahead(self.shapes_ahead(list(Ks), frame_ids, result.conditioned),
                                          result.prediction.hw)
        return Processed(self._result(result, full, frame_ids, list(distortion), wants_nav),
                         dict(result.prediction.timing_s), list(range(len(full))))

    def _result(self, result: RigResult, frames: list[CameraFrame], frame_ids: list[str],
                distortion: list[tuple[str, list[float]] | None], wants_nav: bool) -> SetResult:
        nav = nav_inputs(self.cfg.nav_cfg, self.static_tf, frame_ids) if wants_nav and self.cfg.nav_cfg else None
        out = SetResult(result, list(self.cfg.camera_names), frame_ids, [f.stamp_ns for f in frames],
                        self.cfg.out_cfg, self.rig.engine.label, distortion, nav,
                        reference_camera=self.cfg.camera_names[self.rig.ref_index])
        return out

    def shapes_ahead(self, Ks: list[np.ndarray | None], frame_ids: list[str],
                     conditioned: bool) -> list[tuple[int, bool]]:
        """(views, conditioned) of every other forward this rig's sets may need, the most urgent first.

        For a full set of these intrinsics and frames (which ran ``conditioned``): the temporal window's sizes
        N + 1 .. N + K (the next keyframe needs the next one), then per camera that may go silent its subset's
        N - 1 views (conditioned only as that subset would be: never one view alone, never with a window) and
        that subset's windows. Only one silent camera at a time is prepared for.
        """
        n = len(Ks)
        shapes = self.window_shapes(n)
        for silent in range(n) if n > 1 else ():
            present = [i for i in range(n) if i != silent]
            sub = self._subset(present)
            shapes.append((n - 1, sub.would_condition([Ks[i] for i in present], [frame_ids[i] for i in present])))
            shapes += sub.window_shapes(n - 1)
        unique = list(dict.fromkeys(shapes))
        return [s for s in unique if s != (n, conditioned)]

    def would_condition(self, Ks: list[np.ndarray | None], frame_ids: list[str]) -> bool:
        """Whether a set of cameras with these intrinsics and frames runs pose-conditioned (``Rig.conditions``)."""
        return self.rig.conditions(Ks, self.tf_extrinsics(frame_ids))

    def window_shapes(self, n: int) -> list[tuple[int, bool]]:
        """The temporal window's sizes beyond ``n`` current views (never conditioned); none without a window."""
        tracker = self.rig.temporal
        return [] if tracker is None else [(n + k, False) for k in range(1, tracker.cfg.rule.max_keyframes + 1)]

    def skipped(self, stamp_ns: int) -> None:
        """A set left out on purpose (``--every-n``), stamped ``stamp_ns`` by its reference camera.

        Not a gap for the temporal window: its gap rule measures real silence (``TemporalTracker.heard``).
        """
        if self.rig.temporal is not None:
            self.rig.temporal.heard(stamp_ns)

    def reset_temporal(self, reason: ResetReason, detail: str = "") -> None:
        """Restart the temporal window (keyframes and chain) for what only the caller knows.

        A lifecycle re-activation, a new offline run; nothing without a window or before its first set.
        """
        if self.rig.temporal is not None and self.rig.temporal.has_state:
            self.rig.temporal.reset(reason, detail)

    def _camera_info_wait(self, frames: list[CameraFrame]) -> Dropped | None:
        """A Dropped while an advertised camera_info has not arrived, for at most CAMERA_INFO_WAIT_S.

        The camera's K beats the model's guess, and switching K between sets would make the clouds jump; but a
        driver may advertise and never publish: after the wait the set goes on without it (said once).
        """
        missing = [c for c, f in zip(self.cfg.camera_names, frames)
                   if f.calibration is None and f.calibration_pending]
        if not missing:
            self._info_wait_since_ns = None
            return None
        stamp_ns = frames[self.rig.ref_index].stamp_ns
        if self._info_wait_since_ns is None:
            self._info_wait_since_ns = stamp_ns
        if (stamp_ns - self._info_wait_since_ns) / NS_PER_S < CAMERA_INFO_WAIT_S:
            return Dropped(DropReason.WAITING_FOR_CAMERA_INFO, f"camera_info of {missing} has not arrived yet")
        self._say(f"camera_info of {missing} is advertised but none arrived in {CAMERA_INFO_WAIT_S:.0f} s of "
                  "images: going on without it")
        return None

    def _conditioning_blocked(self, Ks: list[np.ndarray | None], known: np.ndarray | None,
                              frame_ids: list[str]) -> Dropped | None:
        if not self.conditioning_required():
            return None
        unusable = [c for c, K in zip(self.cfg.camera_names, Ks) if K is None and c in self._info_ignored]
        if unusable:  # a wrong camera_info will not fix itself: bad input
            return Dropped(DropReason.BAD_INPUT,
                           f"pose conditioning needs the K of {unusable}, whose camera_info size differs from its "
                           "images: fix the camera_info, or set cameras.<name>.hfov_deg, or pose_conditioning: off")
        if known is None and self.rig.T_ref_cam_known is None or any(K is None for K in Ks):
            # Mixing conditioned and unconditioned sets would make the poses jump between two frames of reference
            return Dropped(DropReason.WAITING_FOR_CONDITIONING,
                           "pose conditioning is configured but camera_info or the /tf_static path between "
                           f"{frame_ids} is missing; waiting")
        return None

    def _process_subset(self, present: list[int], frames: Sequence[CameraFrame | None],
                        wants_nav: bool, ranges: RangeSet | None) -> Processed | Dropped:
        """A set without the silent cameras: the same policy on the rig of the ``present`` cameras.

        The subset's config is derived from this one at every set, so a runtime parameter change reaches every
        subset at once; its outputs keep the rig's pinned reference camera (TF and points_fused are skipped
        while that camera is silent, see ``SetResult.tf_withheld``).
        """
        tracker = self.rig.temporal
        if (tracker is not None and self.rig.ref_index not in present and not self._reference_silent
                and tracker.has_state):
            # no view 0 to chain: keyframes and chain restart (at the last pose) when the reference is back
            tracker.reset(ResetReason.REFERENCE_SILENT, f"{self.cfg.camera_names[self.rig.ref_index]} silent")
        self._reference_silent = self.rig.ref_index not in present
        sub = self._subset(present)
        done = sub.process([frames[i] for i in present], wants_nav, ranges)
        if isinstance(done, Processed):
            done.cameras = present
            done.outputs.reference_camera = self.cfg.camera_names[self.rig.ref_index]
            self.without_K = sub.without_K
        return done

    def _subset(self, present: list[int]) -> FrameSetProcessor:
        """The processor of the rig of the ``present`` cameras (made once), with this one's current config."""
        key = tuple(present)
        if key not in self._subsets:
            sub = FrameSetProcessor(self.rig.subset(present), self.cfg.subset(present), self.static_tf, self._warn)
            sub._said = self._said  # one memory of what was said
            self._subsets[key] = sub
        sub = self._subsets[key]
        sub.cfg = self.cfg.subset(present)
        return sub

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

    def _note_missing_K(self, result: RigResult) -> None:
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
