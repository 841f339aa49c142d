"""What one ``da3-ros bag`` run did: sets formed, processed, dropped and withheld (by reason), stage times."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

_LOG = logging.getLogger("da3_ros.offline.bag")


@dataclass
class BagSummary:
    """What one run did; ``drops`` counts sets not processed, by reason."""

    cameras: list[str]
    sets_formed: int = 0
    sets_processed: int = 0
    skipped_every_n: int = 0
    drops: Counter = field(default_factory=Counter)
    drop_examples: dict[str, str] = field(default_factory=dict)
    withheld: Counter = field(default_factory=Counter)  # processed sets that withheld an output, by reason
    withheld_examples: dict[str, str] = field(default_factory=dict)
    frames_in: Counter = field(default_factory=Counter)
    frames_outside_window: int = 0
    stage_s: dict[str, list[float]] = field(default_factory=dict)
    messages_written: int = 0
    truncated: str = ""
    interrupted: bool = False
    wall_s: float = 0.0
    frames_dropped_by_sync: int = 0
    temporal_restarts: Counter = field(default_factory=Counter)  # the window chain's restarts, by reason
    trajectory_poses: int = 0
    video_dropped: Counter = field(default_factory=Counter)  # video packets not decoded, by the node's reason
    video_drop_cameras: dict[str, set[str]] = field(default_factory=dict)
    range_fitted: list[float] = field(default_factory=list)  # each set's range scale (metric.range_topics)
    range_unknown: Counter = field(default_factory=Counter)  # sets without one, by reason

    def range_fit(self, fit) -> None:
        """One set's range fit (``core.range_scale.RangeFit``): its scale, or why it has none (first one logged)."""
        if fit.known:
            self.range_fitted.append(fit.scale)
            return
        if not self.range_unknown:
            _LOG.warning("a set without a range scale: %s", fit.reason)
        self.range_unknown[fit.reason] += 1

    def stage(self, name: str, seconds: float) -> None:
        self.stage_s.setdefault(name, []).append(seconds)

    def drop(self, reason: str, detail: str, log: str = "") -> None:
        """A set not processed, and why; the first of each reason is logged.

        ``log``: a longer text to log (e.g. with a bug's traceback) than the one-line ``detail`` of the summary.
        """
        if reason not in self.drop_examples:
            self.drop_examples[reason] = detail
            _LOG.warning("set dropped (%s): %s", reason, log or detail)
        self.drops[reason] += 1

    def video_drop(self, reason: str, camera: str) -> None:
        """A video packet not decoded (da3_ros.core.video_stream.VideoDrop); the first of each reason is logged."""
        if reason not in self.video_drop_cameras:
            _LOG.warning("%s: video packet dropped (%s)", camera, reason)
        self.video_drop_cameras.setdefault(reason, set()).add(camera)
        self.video_dropped[reason] += 1

    def withhold(self, reason: str, detail: str) -> None:
        """A processed set that did not emit some output (da3_ros.ros.emit), and why."""
        if reason not in self.withheld_examples:
            self.withheld_examples[reason] = detail
            _LOG.warning("output withheld (%s): %s", reason, detail)
        self.withheld[reason] += 1

    def lines(self) -> list[str]:
        """The summary printed at the end."""
        n = len(self.cameras)
        rate = self.sets_processed / self.wall_s if self.wall_s > 0 else 0.0
        out = [f"sets processed: {self.sets_processed} of {self.sets_formed} synchronised "
               f"({self.sets_processed * n} views, {n} per set, ONE forward each) in {self.wall_s:.1f} s = "
               f"{rate:.2f} sets/s",
               "frames in: " + ", ".join(f"{c} {self.frames_in[c]}" for c in self.cameras)
               + f"; left unmatched by sync: {self.frames_dropped_by_sync}",
               f"messages written: {self.messages_written}"]
        if self.skipped_every_n:
            out.append(f"skipped by --every-n: {self.skipped_every_n} sets")
        if self.frames_outside_window:
            out.append(f"frames outside --start/--duration: {self.frames_outside_window}")
        for reason, count in sorted(self.drops.items()):
            out.append(f"dropped ({reason}): {count} sets, e.g. {self.drop_examples[reason]}")
        for reason, count in sorted(self.video_dropped.items()):  # named as the node's /diagnostics counters
            out.append(f"video_dropped.{reason}: {count} packets not decoded "
                       f"({', '.join(sorted(self.video_drop_cameras[reason]))})")
        for reason, count in sorted(self.withheld.items()):
            out.append(f"withheld ({reason}): {count} sets, e.g. {self.withheld_examples[reason]}")
        for name, values in self.stage_s.items():
            out.append(f"stage {name:<12} mean {1e3 * float(np.mean(values)):8.1f} ms   total "
                       f"{float(np.sum(values)):7.1f} s")
        if self.range_fitted or self.range_unknown:
            scales = self.range_fitted
            out.append(f"range scale: {len(scales)} sets fitted" + (
                f" (median {float(np.median(scales)):.6g}, {min(scales):.6g}-{max(scales):.6g})" if scales else "")
                + f", {sum(self.range_unknown.values())} without one")
            for reason, count in self.range_unknown.most_common(3):
                out.append(f"  no range scale: {count} sets: {reason}")
        if self.temporal_restarts:
            out.append("temporal chain restarts: " + ", ".join(f"{r} {n}" for r, n in
                                                                sorted(self.temporal_restarts.items())))
        if self.trajectory_poses:
            out.append(f"trajectory: {self.trajectory_poses} poses")
        if self.truncated:
            out.append(f"INPUT TRUNCATED: {self.truncated}")
        if self.interrupted:
            out.append("INTERRUPTED (Ctrl-C): the output holds every set finished before it")
        return out
