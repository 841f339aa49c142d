"""Counters and per-stage latencies of the node, and their /diagnostics message (no rclpy)."""
from __future__ import annotations

import resource
import sys
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

STAGES = ("sync_wait", "convert", "preprocess", "forward", "postprocess", "publish", "nav", "latency")
WINDOW = 50  # sets kept for the latency statistics
# Outputs a set withheld (da3_ros.ros.emit): WARN while any of these grew since the last /diagnostics message
WITHHELD = {"nav_unavailable": "points_obstacles / scan could not be built (TF link, intrinsics, ground)",
            "nav_not_metric": "points_obstacles / scan withheld: depth is not metric",
            "tf_not_metric": "TF withheld: tf.mode camera_frames needs metric depth",
            "reference_silent": "the reference camera is silent: TF and points_fused skipped",
            "odom_not_metric": "odometry withheld: the temporal chain is not in metres",
            "tf_second_parent": "TF withheld: a frame would get a second parent (temporal.child_frame, tf.suffix)"}
# Events that WARN while they grew since the last /diagnostics message (their counters stay cumulative in the
# values): one bad frame is one WARN message, not a WARN for good
EVENTS = {"errors": "errors", "bad_input": "bad input", "incompatible_qos": "incompatible QoS",
          "video_dropped": "video packets dropped", "range_unknown": "sets without a range scale"}
COUNTERS = ("skipped_no_subscribers", "waiting_for_cameras", "bad_input", "errors", "incompatible_qos",
            "engine_unavailable", "range_unknown", *WITHHELD)  # the event counters ``NodeStats.count`` adds to


class NodeStats:
    """What the node counts; written by the callbacks and the worker, read by the diagnostics timer."""

    def __init__(self, cameras: list[str], backend: str = ""):
        self.cameras = cameras
        self.backend = backend
        self._lock = threading.Lock()
        self.frames_in = [0] * len(cameras)
        self.sets_done = 0
        self.clouds_built = 0
        self.skipped_no_subscribers = 0
        self.waiting_for_cameras = 0  # sets skipped: camera_info published but not yet received, or
        # conditioning configured and camera_info / the /tf_static path missing
        self.bad_input = 0
        self.errors = 0
        self.incompatible_qos = 0
        self.nav_unavailable = 0  # sets whose points_obstacles / scan could not be built (TF link, K, ground)
        self.engine_unavailable = 0  # sets dropped because a remote engine was down or too slow
        self.nav_not_metric = 0  # sets whose navigation outputs were withheld: relative depth
        self.tf_not_metric = 0  # sets whose TF was withheld: tf.mode camera_frames with relative depth
        self.odom_not_metric = 0  # sets whose odometry was withheld: a relative chain, no opt-in
        self.reference_silent = 0  # sets without the reference camera: no TF, no points_fused
        self.tf_second_parent = 0  # sets whose odometry TF was withheld: its child frame has another parent
        self.video_dropped = 0  # video packets not decoded (da3_ros.core.video_stream.VideoDrop), by reason below
        self.video_drops: dict[str, int] = {}
        self.range_unknown = 0  # sets whose range scale was unknown (metric.range_topics): reason in range_reason
        self._seen = dict.fromkeys([*WITHHELD, *EVENTS], 0)  # the counts at the last diagnostics message
        self._qos_warn_sets: int | None = None  # sets_done when an incompatible QoS last grew (WARN until one more)
        self.notes: dict[str, str] = {}  # the last set's metric scale and cameras without intrinsics
        self._stage_s = {s: deque(maxlen=WINDOW) for s in STAGES}
        self._done_t = deque(maxlen=WINDOW)
        self._in_t = deque(maxlen=WINDOW * 4)
        self._start = time.monotonic()

    def set_scale(self, pred, scale_filter, without_K: list[str]) -> None:
        """The last set's metric scale (source, raw, applied, the filter's counters) and cameras without K."""
        with self._lock:
            self.notes.update(
                scale_source=pred.scale_source, scale_raw=f"{pred.scale_raw:.6g}", scale=f"{pred.scale:.6g}",
                scale_held=str(scale_filter.held), scale_outliers=str(scale_filter.outliers),
                scale_resets=str(scale_filter.resets), no_intrinsics=",".join(without_K))

    def set_range(self, fit, stale_sets: int = 0) -> None:
        """The last set's range fit (``core.range_scale.RangeFit``): scale, returns, inliers, residual, offset.

        ``stale_sets``: sets so far for which the range messages were all outside ``metric.range_slop_s``.
        """
        with self._lock:
            self.range_unknown += not fit.known
            self.notes.update(range_stale=str(stale_sets),
                range_scale=f"{fit.scale:.6g}", range_points=str(fit.points), range_inliers=str(fit.inliers),
                range_residual=f"{fit.residual:.6g}", range_offset_s=f"{fit.offset_s:.6g}", range_reason=fit.reason,
                range_versus=f"{fit.versus:.6g}", range_check_of=fit.check_of)

    def set_temporal(self, step, reset_counts: dict[str, int]) -> None:
        """The last set's temporal window: its views, the chain, drift and residual, the restarts by reason."""
        fit = step.chain.alignment
        with self._lock:
            self.notes.update(
                temporal_window_views=str(step.layout.n_views),
                temporal_keyframes=str(len(step.layout.keyframe_stamps_ns)),
                temporal_chain_id=str(step.chain.chain_id), scale_drift=f"{step.chain.scale_drift:.6g}",
                alignment_residual=f"{fit.residual_rel:.6g}" if fit is not None else "nan",
                temporal_resets=str(sum(reset_counts.values())),
                **{f"temporal_resets.{k}": str(v) for k, v in sorted(reset_counts.items())})

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` under the lock (callbacks and the worker count concurrently)."""
        if name not in COUNTERS:
            raise ValueError(f"NodeStats has no counter {name!r}; counters: {', '.join(COUNTERS)}")
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def video_drop(self, reason: str) -> None:
        """One video packet not decoded, for ``reason`` (a ``VideoDrop`` value): ``video_dropped.<reason>``."""
        with self._lock:
            self.video_dropped += 1
            self.video_drops[reason] = self.video_drops.get(reason, 0) + 1

    def frame_in(self, i: int) -> None:
        with self._lock:
            self.frames_in[i] += 1
            self._in_t.append(time.monotonic())

    def set_done(self, clouds: int = 0, **stage_s: float) -> None:
        with self._lock:
            self.sets_done += 1
            self.clouds_built += clouds
            self._done_t.append(time.monotonic())
            for k, v in stage_s.items():
                self._stage_s[k].append(v)

    @staticmethod
    def _rate(times: deque) -> float:
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def summary(self) -> dict[str, float]:
        """Flat numbers: counters, rates (Hz) and latency p50/max per stage (ms)."""
        with self._lock:
            out = {f"frames_in.{c}": n for c, n in zip(self.cameras, self.frames_in)}
            out.update(sets_done=self.sets_done, clouds_built=self.clouds_built, bad_input=self.bad_input,
                       skipped_no_subscribers=self.skipped_no_subscribers, errors=self.errors,
                       waiting_for_cameras=self.waiting_for_cameras,
                       incompatible_qos=self.incompatible_qos, nav_unavailable=self.nav_unavailable,
                       engine_unavailable=self.engine_unavailable, nav_not_metric=self.nav_not_metric,
                       tf_not_metric=self.tf_not_metric, reference_silent=self.reference_silent,
                       odom_not_metric=self.odom_not_metric,
                       tf_second_parent=self.tf_second_parent, video_dropped=self.video_dropped,
                       range_unknown=self.range_unknown,
                       **{f"video_dropped.{k}": n for k, n in sorted(self.video_drops.items())},
                       input_rate_hz=self._rate(self._in_t),
                       output_rate_hz=self._rate(self._done_t),
                       peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                       torch_loaded=int("torch" in sys.modules))  # 0 for the torch-free backends
            for k, v in self._stage_s.items():
                if v:
                    out[f"{k}_ms.p50"] = float(np.median(v)) * 1e3
                    out[f"{k}_ms.max"] = float(np.max(v)) * 1e3
        return out

    def _grew_now(self) -> dict[str, int]:
        """The withheld reasons and events that grew since the last call, by how much (what is wrong now)."""
        with self._lock:
            grew = {k: getattr(self, k) - seen for k, seen in self._seen.items() if getattr(self, k) > seen}
            self._seen = {k: getattr(self, k) for k in self._seen}
            if "incompatible_qos" in grew:
                self._qos_warn_sets = self.sets_done
            elif self._qos_warn_sets is not None and self.sets_done > self._qos_warn_sets:
                self._qos_warn_sets = None  # a set went through since: the mismatch cost nothing more
        return grew

    def events_now(self) -> tuple[list[str], str]:
        """(withheld reasons grown, event text or '') since the last call: what the next /diagnostics says.

        Errors and bad input WARN only in the message after they grew; an incompatible QoS (one event per
        mismatched match, not per lost frame) until a set is processed after it.
        """
        grew = self._grew_now()
        if self._qos_warn_sets is not None and "incompatible_qos" not in grew:
            grew["incompatible_qos"] = 0  # still nothing processed since the mismatch
        events = [f"{EVENTS[k]} +{grew[k]}" if grew[k] else f"{EVENTS[k]} (no set since)"
                  for k in EVENTS if k in grew]
        text = f"{', '.join(events)} since the last message (see values)" if events else ""
        return [k for k in WITHHELD if k in grew], text

    def diagnostics(self, node_name: str, sync_stats, engine_health: tuple[bool, dict[str, str]] = (True, {}),
                    silent_cameras: list[str] | None = None, reference_camera: str = "") -> DiagnosticArray:
        """One DiagnosticStatus; WARN on silent cameras, a stopped engine, and what grew since the last message.

        Errors, bad input, incompatible QoS and withheld outputs (no metres for navigation, a silent reference)
        WARN in the message after they grew (``events_now``), never for good: the counters stay in the values.
        """
        engine_ok, engine_values = engine_health
        silent_cameras = silent_cameras or []
        withheld, events = self.events_now()
        values: dict[str, float | str] = {"backend": self.backend, **self.summary(), **engine_values}
        with self._lock:
            values.update(self.notes)
        values.update(silent_cameras=",".join(silent_cameras), partial_sets=sync_stats.partial_sets,
                      reference_silent_now=str(reference_camera in silent_cameras).lower(),
                      withheld_now=",".join(withheld), events_now=events)
        values.update(sets_superseded=sync_stats.sets_superseded, frames_dropped=sync_stats.frames_dropped,
                      stale_rejected=sync_stats.stale_rejected, sync_resets=sync_stats.resets)
        level, message = DiagnosticStatus.OK, "ok"
        if not engine_ok:  # the engine's own reason(s) when it gives them (an engine's ``*.problem`` values)
            why = "; ".join(v for k, v in engine_values.items() if k.rpartition(".")[2] == "problem") or "see values"
            level, message = DiagnosticStatus.WARN, f"the engine cannot run sets now ({why}); retrying"
            if silent_cameras:  # the sets it refuses may be what the silent cameras leave (a triton shape)
                message += f"; silent camera(s) {silent_cameras}"
        elif reference_camera and reference_camera in silent_cameras:
            level, message = DiagnosticStatus.WARN, (
                f"reference camera {reference_camera!r} silent (silent: {silent_cameras}): sets go on without it, "
                "with no TF and no points_fused")
        elif silent_cameras:
            level, message = DiagnosticStatus.WARN, f"silent camera(s) {silent_cameras}: sets go on without them"
        elif withheld:
            level, message = DiagnosticStatus.WARN, "; ".join(WITHHELD[k] for k in withheld)
        elif events:
            level, message = DiagnosticStatus.WARN, events
        elif not self.sets_done:
            message = "waiting for synchronized sets" if not self.skipped_no_subscribers else "no subscribers"
        status = DiagnosticStatus(level=level, name=f"{node_name}: depth", message=message, hardware_id=node_name,
                                  values=[KeyValue(key=k, value=f"{v:.6g}" if isinstance(v, float) else str(v))
                                          for k, v in values.items()])
        return DiagnosticArray(status=[status])


def numeric_values(msg: DiagnosticArray) -> dict[str, float]:
    """The numeric values of a /diagnostics message's first status (strings such as ``backend`` left out)."""
    out = {}
    for kv in msg.status[0].values:
        try:
            out[kv.key] = float(kv.value)
        except ValueError:
            continue
    return out
