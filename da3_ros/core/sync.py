"""N-way time synchronisation of camera streams with a "newest complete set" policy.

The consumer (a network taking ~1 s per set) is far slower than the cameras (~30 Hz), so there is no
backlog: at most one complete set waits for it, and a newer set replaces it. Per-stream queues are bounded,
and every stream's delivered stamps strictly increase, so a stale set is never processed after a newer one.
Pure Python (no rclpy); all times are integer nanoseconds, ``arrival_ns`` on the caller's clock.
"""
from __future__ import annotations

import dataclasses
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple


class SyncMode(str, Enum):
    """How close the stamps of one set must be."""

    APPROXIMATE = "approximate"  # max(stamps) - min(stamps) <= slop_ns
    EXACT = "exact"  # all stamps equal


@dataclass(frozen=True)
class FrameSet:
    """One frame per stream, in stream order; ``None`` for a stream that was silent (see ``camera_timeout_ns``)."""

    stamps_ns: tuple[int | None, ...]
    items: tuple[Any, ...]  # the caller's payloads (e.g. ROS messages); None where silent
    first_arrival_ns: int  # when the earliest member arrived
    complete_ns: int  # when the set became complete (arrival of its last member)
    # the stamps of the sets this one superseded since the last take, oldest first (at most MAX_SUPERSEDED): sets
    # seen but not processed, which a consumer's gap rule must not take for silence (the temporal window's)
    superseded_stamps_ns: tuple[tuple[int | None, ...], ...] = ()

    @property
    def present(self) -> tuple[int, ...]:
        """The streams with a frame in this set."""
        return tuple(i for i, t in enumerate(self.stamps_ns) if t is not None)

    @property
    def spread_ns(self) -> int:
        """Newest minus oldest stamp."""
        stamps = [t for t in self.stamps_ns if t is not None]
        return max(stamps) - min(stamps)

    @property
    def newest_stamp_ns(self) -> int:
        """The newest member's stamp."""
        return max(t for t in self.stamps_ns if t is not None)


@dataclass
class SyncStats:
    """Monotonic counters.

    Every offered frame and formed set ends up in exactly one place, so at any time
    ``sum(frames_in) == frames_taken + frames pending + frames_dropped + frames queued`` and
    ``sets_formed == sets_taken + sets_superseded + pending`` (pending is 0 or 1).
    """

    frames_in: list[int]  # offered, per stream
    frames_dropped: int = 0  # left without joining a taken set: overflow, duplicate, stale, superseded, reset
    sets_formed: int = 0
    sets_superseded: int = 0  # pending sets lost before the consumer took them: replaced (or reset) away
    sets_taken: int = 0
    stale_rejected: int = 0  # frames older than the newest formed set on their stream
    resets: int = 0  # state cleared: time jumped backwards, or reset() was called
    frames_taken: int = 0  # frames handed to the consumer in taken sets
    partial_sets: int = 0  # sets handed to the consumer without the silent streams
    silent: list[int] = dataclasses.field(default_factory=list)  # streams silent at the last offered frame


class _Frame(NamedTuple):
    stamp_ns: int
    arrival_ns: int
    item: Any


def _stamp_ns(frame: _Frame) -> int:
    return frame.stamp_ns


# A set formed without a silent stream waits this long (capped at half the camera timeout) before the consumer
# may take it: a returning camera's frame of the same stamp, arriving milliseconds after its partner's (a
# driver flushing its buffer after a reconnect, a bag replayed fast), completes it instead (issue 28). Newer
# sets that supersede a held one keep its deadline, so a fast camera's sets are delayed, never starved.
PARTIAL_HOLD_NS = 50_000_000
# Superseded sets' stamps carried to the next set taken (FrameSet.superseded_stamps_ns): bounded for a consumer
# busy for long (30 s at 30 Hz); older ones are forgotten, which a gap rule then sees as the silence it was not.
MAX_SUPERSEDED = 1000


class TimeSynchronizer:
    """Match frames of ``num_streams`` streams into sets; keep only the newest complete set for the consumer.

    ``add`` (subscription callbacks) and ``take`` (worker thread) may run concurrently.
    """

    def __init__(self, num_streams: int, mode: SyncMode = SyncMode.APPROXIMATE, slop_ns: int = 20_000_000,
                 queue_size: int = 10, reset_backwards_ns: int = 1_000_000_000, camera_timeout_ns: int = 0) -> None:
        if num_streams < 1:
            raise ValueError(f"num_streams must be >= 1, got {num_streams}")
        if slop_ns < 0:
            raise ValueError(f"slop_ns must be >= 0, got {slop_ns}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if reset_backwards_ns < 0:
            raise ValueError(f"reset_backwards_ns must be >= 0, got {reset_backwards_ns}")
        self.num_streams = num_streams
        self.mode = SyncMode(mode)  # also accepts "exact" / "approximate" from parameters
        self.slop_ns = slop_ns
        self.queue_size = queue_size
        self.reset_backwards_ns = reset_backwards_ns
        if camera_timeout_ns < 0:
            raise ValueError(f"camera_timeout_ns must be >= 0 (0 = wait for every stream), got {camera_timeout_ns}")
        # A stream with no frame for this long (arrival clock) is silent: sets form without it until it sends
        # again. 0 = never: every set needs every stream.
        self.camera_timeout_ns = camera_timeout_ns
        self._last_arrival_ns: list[int | None] = [None] * num_streams
        self._active_since_ns: list[int | None] = [None] * num_streams
        self._first_arrival_ns: int | None = None
        self._match_ns = 0 if self.mode is SyncMode.EXACT else slop_ns
        self.partial_hold_ns = min(PARTIAL_HOLD_NS, camera_timeout_ns // 2)
        self._lock = threading.Lock()
        self._stats = SyncStats(frames_in=[0] * num_streams)
        self._clear()

    def _clear(self) -> None:
        self._queues: list[list[_Frame]] = [[] for _ in range(self.num_streams)]  # sorted by stamp
        self._pending: FrameSet | None = None
        self._pending_ready_ns = 0  # arrival clock: when the consumer may take the pending set (see take)
        # Per stream, the stamp of the newest set formed: nothing at or before it may join a later set.
        self._formed_ns: list[int | None] = [None] * self.num_streams
        # Per stream, the newest stamp offered: the reference for detecting time jumping backwards.
        self._newest_ns: list[int | None] = [None] * self.num_streams
        self._last_arrival_ns = [None] * self.num_streams  # a reset starts the silence clocks over
        # Per stream, when its current run of frames began (a gap over half the timeout ends a run): a stream
        # is silent only while another one has been sending for the whole timeout (see ``_silent_locked``).
        self._active_since_ns = [None] * self.num_streams
        self._first_arrival_ns = None
        self._clock_ns: int | None = None  # the newest arrival offered: ``take``'s clock when it is given none

    def add(self, stream: int, stamp_ns: int, item: Any, arrival_ns: int) -> bool:
        """Offer one frame; returns True if a (new) complete set is now pending."""
        if not 0 <= stream < self.num_streams:
            raise ValueError(f"stream index {stream} out of range 0..{self.num_streams - 1}")
        with self._lock:
            st = self._stats
            st.frames_in[stream] += 1
            newest = self._newest_ns[stream]
            if newest is not None and stamp_ns < newest - self.reset_backwards_ns:
                self._reset_locked()  # a looping bag or restarted sim time: start over, keep this frame
                newest = None
            last = self._last_arrival_ns[stream]
            if last is None or 2 * (arrival_ns - last) > self.camera_timeout_ns:
                self._active_since_ns[stream] = arrival_ns  # a new run: the first frame, or after a pause
            self._last_arrival_ns[stream] = arrival_ns
            if self._first_arrival_ns is None:
                self._first_arrival_ns = arrival_ns
            self._clock_ns = arrival_ns if self._clock_ns is None else max(self._clock_ns, arrival_ns)
            self._newest_ns[stream] = stamp_ns if newest is None else max(newest, stamp_ns)
            formed = self._formed_ns[stream]
            if formed is not None and stamp_ns <= formed:
                st.frames_dropped += 1
                if stamp_ns < formed:  # equal is a duplicate of a set member, not stale
                    st.stale_rejected += 1
                return False
            queue = self._queues[stream]
            i = bisect_left(queue, stamp_ns, key=_stamp_ns)
            if i < len(queue) and queue[i].stamp_ns == stamp_ns:
                st.frames_dropped += 1  # duplicate: the queued copy may already be paired up, keep it
                return False
            frame = _Frame(stamp_ns, arrival_ns, item)
            if self._completes_pending(stream, stamp_ns):
                self._complete_pending(stream, frame)  # a returning camera joins the set formed without it
                return True
            queue.insert(i, frame)
            silent = self._silent_locked(stream, arrival_ns)
            members = self._match(stream, frame, silent)
            if members is not None:
                self._form(members)
            if len(queue) > self.queue_size:  # only this queue can have grown
                del queue[0]
                st.frames_dropped += 1
            return members is not None

    def _silent_locked(self, stream: int, now_ns: int) -> set[int]:
        """Streams other than ``stream`` that are silent at ``now_ns``; what they left queued is dropped."""
        silent = {s for s in self._silent_at(now_ns) if s != stream}
        for s in silent:  # what a silent stream left queued is stale by now: never put it in a set
            self._stats.frames_dropped += len(self._queues[s])
            self._queues[s].clear()
        self._stats.silent = sorted(silent)
        return silent

    def _silent_at(self, now_ns: int) -> list[int]:
        """Streams silent at ``now_ns``: nothing for ``camera_timeout_ns`` WHILE another stream kept sending.

        When every stream was quiet (a paused bag or simulator, a restarted rig, a re-activated node), the
        first one to send again is not alone: its partners are not silent until it has been sending for the
        whole timeout without them. A stream that never sent counts from the first frame of any stream. "Sending"
        is measured up to the other stream's last frame, not to ``now_ns``: when a whole rig pauses, the camera
        whose last frame came first was otherwise silent for the skew between the last frames (its partner's
        timeout not yet run out), and /diagnostics said so.
        """
        timeout = self.camera_timeout_ns
        if not timeout or self._first_arrival_ns is None:
            return []
        quiet_since = [last if last is not None else self._first_arrival_ns for last in self._last_arrival_ns]
        sending = [k for k, last in enumerate(self._last_arrival_ns)
                   if last is not None and now_ns - last <= timeout]
        out = []
        for s, since in enumerate(quiet_since):
            if now_ns - since <= timeout:
                continue
            runs = [(self._active_since_ns[k], self._last_arrival_ns[k]) for k in sending if k != s]
            if any(run is not None and last is not None and min(now_ns, last) - max(since, run) > timeout
                   for run, last in runs):
                out.append(s)
        return out

    def silent_streams(self, now_ns: int) -> list[int]:
        """The streams that would be left out of a set formed at ``now_ns`` (arrival clock)."""
        with self._lock:
            return self._silent_at(now_ns)

    def _match(self, stream: int, frame: _Frame, silent: AbstractSet[int] = frozenset()) -> list[_Frame | None] | None:
        """Find the set containing ``frame`` whose members are closest in time to it (None if none fits).

        Closest means the least total |stamp - frame's stamp| (ties: the newer set); this is the per-stream
        closest frame whenever those fit in the slop, and still finds a set when they do not but another does.
        """
        t_ns, slop_ns = frame.stamp_ns, self._match_ns
        near: list[list[_Frame]] = []  # per stream, the queued frames within slop of t_ns
        for s, queue in enumerate(self._queues):
            if s == stream:
                near.append([frame])
                continue
            if s in silent:
                near.append([])  # left out of the set
                continue
            lo = bisect_left(queue, t_ns - slop_ns, key=_stamp_ns)
            hi = bisect_right(queue, t_ns + slop_ns, key=_stamp_ns)
            if lo == hi:
                return None  # the common case: some stream has nothing near yet
            near.append(queue[lo:hi])
        # A set's oldest member w lies in [t - slop, t] and all of it in [w, w + slop]: try each such window.
        best: list[_Frame | None] | None = None
        best_key = None
        for w_ns in sorted({f.stamp_ns for frames in near for f in frames if f.stamp_ns <= t_ns}):
            members: list[_Frame | None] = []
            for s, frames in enumerate(near):
                if s in silent:
                    members.append(None)
                    continue
                inside = [f for f in frames if w_ns <= f.stamp_ns <= w_ns + slop_ns]
                if not inside:
                    break
                members.append(min(inside, key=lambda f: (abs(f.stamp_ns - t_ns), -f.stamp_ns)))
            else:
                found = [f for f in members if f is not None]
                key = (sum(abs(f.stamp_ns - t_ns) for f in found), -sum(f.stamp_ns for f in found))
                if best_key is None or key < best_key:
                    best, best_key = members, key
        return best

    def _completes_pending(self, stream: int, stamp_ns: int) -> bool:
        """Whether a frame of ``stream`` fits the pending set that was formed without it (within the slop)."""
        pending = self._pending
        if pending is None or pending.stamps_ns[stream] is not None:
            return False
        stamps = [t for t in pending.stamps_ns if t is not None] + [stamp_ns]
        return max(stamps) - min(stamps) <= self._match_ns

    def _complete_pending(self, stream: int, frame: _Frame) -> None:
        """Put ``frame`` into the pending set in its stream's place; queued frames at or before it are dropped."""
        pending = self._pending
        assert pending is not None
        queue = self._queues[stream]
        n = bisect_right(queue, frame.stamp_ns, key=_stamp_ns)
        self._stats.frames_dropped += n
        del queue[:n]
        self._formed_ns[stream] = frame.stamp_ns
        stamps, items = list(pending.stamps_ns), list(pending.items)
        stamps[stream], items[stream] = frame.stamp_ns, frame.item
        self._pending = FrameSet(tuple(stamps), tuple(items), min(pending.first_arrival_ns, frame.arrival_ns),
                                 max(pending.complete_ns, frame.arrival_ns))

    def _form(self, members: list[_Frame | None]) -> None:
        """Make ``members`` the pending set and drop every queued frame at or before them."""
        st = self._stats
        for s, (queue, member) in enumerate(zip(self._queues, members, strict=True)):
            if member is None:  # a silent stream: nothing of it in this set
                continue
            n = bisect_right(queue, member.stamp_ns, key=_stamp_ns)
            st.frames_dropped += n - 1  # the member itself moves into the set
            del queue[:n]
            self._formed_ns[s] = member.stamp_ns
        arrivals_ns = [f.arrival_ns for f in members if f is not None]
        ready_ns = max(arrivals_ns) + (self.partial_hold_ns if None in members else 0)
        if self._pending is not None:
            st.sets_superseded += 1
            st.frames_dropped += len(self._pending.present)
            if None in members and len(self._pending.present) < self.num_streams:
                ready_ns = min(ready_ns, self._pending_ready_ns)  # a held set's deadline is kept: never starved
        self._pending_ready_ns = ready_ns
        before = () if self._pending is None else (
            *self._pending.superseded_stamps_ns, self._pending.stamps_ns)[-MAX_SUPERSEDED:]
        self._pending = FrameSet(tuple(None if f is None else f.stamp_ns for f in members),
                                 tuple(None if f is None else f.item for f in members),
                                 min(arrivals_ns), max(arrivals_ns), before)
        st.sets_formed += 1

    def take(self, now_ns: int | None = None) -> FrameSet | None:
        """Hand the newest pending set to the consumer (None if none, or none it may take yet).

        A set formed without a silent stream goes out only after ``partial_hold_ns`` and only while every
        stream missing from it has still sent nothing since: a camera that came back meanwhile either completed
        the set (see ``add``) or gets the next one whole. ``now_ns`` is on the arrival clock (default: the
        newest arrival offered).
        """
        with self._lock:
            pending = self._pending
            if pending is None or self._ready_in_locked(pending, now_ns) != 0:
                return None
            self._pending = None
            st = self._stats
            st.sets_taken += 1
            st.frames_taken += len(pending.present)
            st.partial_sets += len(pending.present) < self.num_streams
            return pending

    def ready_in_ns(self, now_ns: int | None = None) -> int | None:
        """Nanoseconds until ``take`` hands out the pending set: 0 now, None with no set it will hand out."""
        with self._lock:
            return None if self._pending is None else self._ready_in_locked(self._pending, now_ns)

    def _ready_in_locked(self, pending: FrameSet, now_ns: int | None) -> int | None:
        missing = [s for s, t in enumerate(pending.stamps_ns) if t is None]
        if not missing:
            return 0
        last = [self._last_arrival_ns[s] for s in missing]
        if any(a is not None and a >= pending.complete_ns for a in last):
            return None  # a missing camera is back: this set waits for it, or for the next (whole) set
        now = self._clock_ns if now_ns is None else now_ns
        return max(0, self._pending_ready_ns - (now if now is not None else 0))

    def peek(self) -> FrameSet | None:
        """Return the pending set without taking it."""
        with self._lock:
            return self._pending

    def queued_stamps_ns(self) -> tuple[tuple[int, ...], ...]:
        """Return, per stream, the stamps waiting for a set, oldest first."""
        with self._lock:
            return tuple(tuple(f.stamp_ns for f in queue) for queue in self._queues)

    @property
    def stats(self) -> SyncStats:
        """A consistent copy of the counters."""
        with self._lock:
            return dataclasses.replace(self._stats, frames_in=list(self._stats.frames_in),
                                       silent=list(self._stats.silent))

    def reset(self) -> None:
        """Drop all queued frames, the pending set and the delivered watermark (e.g. on a ROS time jump)."""
        with self._lock:
            self._reset_locked()

    def _reset_locked(self) -> None:
        st = self._stats
        st.frames_dropped += sum(map(len, self._queues))
        if self._pending is not None:
            st.sets_superseded += 1
            st.frames_dropped += len(self._pending.present)
        st.resets += 1
        self._clear()
