"""TimeSynchronizer: matching, the newest-set policy, bounded memory, resets and thread-safety (no ROS)."""
from __future__ import annotations

import random
import threading

import pytest

from da3_ros.core.sync import FrameSet, SyncMode, SyncStats, TimeSynchronizer

MS = 1_000_000
PERIOD_NS = 33_333_333  # 30 Hz


def add(sync: TimeSynchronizer, stream: int, stamp_ns: int, arrival_ns: int | None = None) -> bool:
    """Offer a frame whose payload names it, arriving 1 ms after its stamp unless told."""
    return sync.add(stream, stamp_ns, (stream, stamp_ns), stamp_ns + MS if arrival_ns is None else arrival_ns)


def assert_accounted(sync: TimeSynchronizer) -> SyncStats:
    """Every offered frame is in a taken set, dropped, queued or in the pending set."""
    st = sync.stats
    queued = sum(map(len, sync.queued_stamps_ns()))
    pending = len(sync.peek().present) if sync.peek() is not None else 0
    assert sum(st.frames_in) == st.frames_taken + st.frames_dropped + queued + pending
    assert st.sets_formed == st.sets_taken + st.sets_superseded + (pending > 0)
    return st


def assert_valid(fs: FrameSet, slop_ns: int) -> None:
    assert fs.spread_ns <= slop_ns
    assert fs.items == tuple(enumerate(fs.stamps_ns))  # payloads travel with their own stamps, in order
    assert fs.first_arrival_ns <= fs.complete_ns


# 1. Matching


def test_approximate_pairs_within_slop():
    sync = TimeSynchronizer(2, slop_ns=10 * MS)
    assert not sync.add(0, 100 * MS, "left", arrival_ns=7)
    assert sync.take() is None
    assert sync.add(1, 105 * MS, "right", arrival_ns=9)
    fs = sync.take()
    assert fs == FrameSet((100 * MS, 105 * MS), ("left", "right"), first_arrival_ns=7, complete_ns=9)
    assert fs.spread_ns == 5 * MS and fs.newest_stamp_ns == 105 * MS


def test_approximate_span_limit_is_inclusive():
    sync = TimeSynchronizer(2, slop_ns=10 * MS)
    add(sync, 0, 100 * MS)
    assert not add(sync, 1, 110 * MS + 1)  # 1 ns over the slop
    assert add(sync, 1, 90 * MS)  # exactly the slop
    assert sync.take().stamps_ns == (100 * MS, 90 * MS)


def test_approximate_takes_closest_frame_per_stream():
    sync = TimeSynchronizer(3, slop_ns=10 * MS)
    for stamp_ns in (89, 98, 108):  # 108 would fit too, but 98 is closer
        add(sync, 1, stamp_ns * MS)
    add(sync, 2, 101 * MS)
    assert add(sync, 0, 100 * MS)
    assert sync.take().stamps_ns == (100 * MS, 98 * MS, 101 * MS)
    assert sync.queued_stamps_ns() == ((), (108 * MS,), ())  # the older frame left, the newer one waits
    assert sync.stats.frames_dropped == 1


def test_approximate_finds_a_set_the_closest_frames_miss():
    sync = TimeSynchronizer(3, slop_ns=10 * MS)
    add(sync, 1, 95 * MS)  # closest to 100, but 95..106 spans 11 ms
    add(sync, 1, 108 * MS)
    add(sync, 2, 106 * MS)
    assert add(sync, 0, 100 * MS)
    assert sync.take().stamps_ns == (100 * MS, 108 * MS, 106 * MS)


def test_exact_mode_ignores_slop():
    sync = TimeSynchronizer(2, mode=SyncMode.EXACT, slop_ns=50 * MS)
    add(sync, 0, 100 * MS)
    assert not add(sync, 1, 100 * MS + 1)
    assert add(sync, 1, 100 * MS)
    assert sync.take().stamps_ns == (100 * MS, 100 * MS)
    assert sync.queued_stamps_ns() == ((), (100 * MS + 1,))


def test_mode_from_parameter_string():
    assert TimeSynchronizer(2, mode="exact").mode is SyncMode.EXACT


# 2. Newest-set policy


def test_newer_set_supersedes_pending():
    sync = TimeSynchronizer(2, slop_ns=5 * MS)
    for k in range(3):
        add(sync, 0, k * PERIOD_NS)
        assert add(sync, 1, k * PERIOD_NS + MS)
    fs = sync.take()
    assert fs.stamps_ns == (2 * PERIOD_NS, 2 * PERIOD_NS + MS)
    assert sync.take() is None  # taking empties pending
    st = assert_accounted(sync)
    assert (st.sets_formed, st.sets_superseded, st.sets_taken, st.frames_dropped) == (3, 2, 1, 4)


def test_stale_frames_never_form_a_set():
    sync = TimeSynchronizer(2, slop_ns=5 * MS)
    add(sync, 0, 200 * MS)
    add(sync, 1, 200 * MS)
    assert sync.take().newest_stamp_ns == 200 * MS
    assert not add(sync, 0, 150 * MS)  # late frames, older than what the consumer already has
    assert not add(sync, 1, 151 * MS)
    assert sync.take() is None
    st = assert_accounted(sync)
    assert (st.stale_rejected, st.frames_dropped) == (2, 2)
    assert sync.queued_stamps_ns() == ((), ())


def test_frame_older_than_pending_set_is_stale():
    sync = TimeSynchronizer(2, slop_ns=5 * MS)
    add(sync, 0, 200 * MS)
    add(sync, 1, 200 * MS)
    add(sync, 0, 180 * MS)  # a set with it would go back in time on stream 0
    assert not add(sync, 1, 181 * MS)
    assert sync.take().stamps_ns == (200 * MS, 200 * MS)
    assert sync.stats.stale_rejected == 2


# 3. Bounded memory


@pytest.mark.parametrize("rates", [(1, 1, 1), (10, 1, 3)])
def test_no_backlog_under_load(rates):
    queue_size, slop_ns = 5, 10 * MS
    sync = TimeSynchronizer(3, slop_ns=slop_ns, queue_size=queue_size)
    events = sorted((k * PERIOD_NS // rate + 2 * MS * s, s)
                    for s, rate in enumerate(rates) for k in range(1000))
    last_newest_ns, taken = -1, []
    for n, (stamp_ns, s) in enumerate(events):
        formed_before = sync.stats.sets_formed
        if add(sync, s, stamp_ns):
            pending = sync.peek()
            assert pending.stamps_ns[s] == stamp_ns  # the new set holds the frame that completed it
            assert pending.newest_stamp_ns > last_newest_ns  # and is newer than any set before it
            last_newest_ns = pending.newest_stamp_ns
            assert sync.stats.sets_formed == formed_before + 1
        assert max(map(len, sync.queued_stamps_ns())) <= queue_size
        if n % 30 == 29:
            fs = sync.take()
            if fs is not None:
                assert fs.newest_stamp_ns == last_newest_ns  # the consumer always gets the newest set
                assert_valid(fs, slop_ns)
                taken.append(fs)
    st = assert_accounted(sync)
    assert sum(st.frames_in) == len(events)
    assert len(taken) == st.sets_taken > 30
    assert st.sets_superseded > 0 and st.frames_dropped > 0


def test_queue_overflow_drops_oldest():
    sync = TimeSynchronizer(2, queue_size=3)
    for k in range(1, 6):
        add(sync, 0, k * 100 * MS)
    assert sync.queued_stamps_ns() == ((300 * MS, 400 * MS, 500 * MS), ())
    assert assert_accounted(sync).frames_dropped == 2


# 4. Out-of-order and duplicate frames


def test_out_of_order_frames_are_queued_in_stamp_order():
    sync = TimeSynchronizer(2, slop_ns=5 * MS)
    for stamp_ns in (300, 100, 200):
        add(sync, 0, stamp_ns * MS)
    assert sync.queued_stamps_ns() == ((100 * MS, 200 * MS, 300 * MS), ())
    assert add(sync, 1, 201 * MS)
    assert sync.take().stamps_ns == (200 * MS, 201 * MS)
    assert sync.queued_stamps_ns() == ((300 * MS,), ())


def test_duplicate_stamp_is_dropped_not_replaced():
    sync = TimeSynchronizer(2)
    sync.add(0, 100 * MS, "first", 1)
    assert not sync.add(0, 100 * MS, "second", 2)
    assert sync.queued_stamps_ns() == ((100 * MS,), ())
    sync.add(1, 100 * MS, "other", 3)
    assert not sync.add(0, 100 * MS, "third", 4)  # a duplicate of a set member is not stale either
    assert sync.take().items == ("first", "other")
    st = assert_accounted(sync)
    assert (st.frames_dropped, st.stale_rejected) == (2, 0)


# 5. Time jumping backwards


def test_backwards_jump_resets_and_restarts():
    sync = TimeSynchronizer(2, slop_ns=5 * MS, reset_backwards_ns=1_000 * MS)
    for k in (1, 2):
        add(sync, 0, k * 10_000 * MS)
        add(sync, 1, k * 10_000 * MS)
        if k == 1:
            assert sync.take() is not None
    add(sync, 0, 20_500 * MS)  # queued, with a set pending
    assert not add(sync, 1, 19_500 * MS)  # 1 s back is within the threshold: merely stale
    assert sync.stats.resets == 0
    assert not add(sync, 0, 500 * MS)  # the bag looped
    assert sync.stats.resets == 1
    assert sync.peek() is None and sync.queued_stamps_ns() == ((500 * MS,), ())
    assert add(sync, 1, 500 * MS)  # would be stale without the reset
    assert sync.take().stamps_ns == (500 * MS, 500 * MS)
    assert sync.stats.resets == 1  # stream 1 jumped too, but the state it jumped from was already gone
    assert assert_accounted(sync).frames_dropped == 4  # the stale frame, the pending pair, the queued frame


def test_manual_reset_clears_state_not_counters():
    sync = TimeSynchronizer(2)
    add(sync, 0, 100 * MS)
    add(sync, 1, 100 * MS)
    add(sync, 0, 200 * MS)
    sync.reset()
    assert sync.peek() is None and sync.queued_stamps_ns() == ((), ())
    assert add(sync, 0, 50 * MS) is False and add(sync, 1, 50 * MS) is True  # the watermark is gone too
    st = assert_accounted(sync)
    assert (st.resets, st.frames_dropped, st.frames_in, st.stale_rejected) == (1, 3, [3, 2], 0)


# 6. A silent stream


def test_silent_stream_forms_no_partial_sets():
    sync = TimeSynchronizer(3, queue_size=4)
    for k in range(500):
        for s in (0, 1):
            assert not add(sync, s, k * PERIOD_NS)
    assert sync.take() is None
    assert [len(q) for q in sync.queued_stamps_ns()] == [4, 4, 0]
    st = assert_accounted(sync)
    assert (st.sets_formed, st.frames_in, st.frames_dropped) == (0, [500, 500, 0], 992)


# 7. One stream and invalid arguments


def test_single_stream_every_frame_is_a_set():
    sync = TimeSynchronizer(1, queue_size=1)
    for k in range(5):
        assert add(sync, 0, k * PERIOD_NS)
    assert sync.take().stamps_ns == (4 * PERIOD_NS,)
    st = assert_accounted(sync)
    assert (st.sets_formed, st.sets_superseded, st.frames_dropped) == (5, 4, 4)


@pytest.mark.parametrize("kwargs, bad", [
    ({"num_streams": 0}, "0"),
    ({"num_streams": 2, "slop_ns": -1}, "-1"),
    ({"num_streams": 2, "queue_size": 0}, "0"),
    ({"num_streams": 2, "reset_backwards_ns": -5}, "-5"),
    ({"num_streams": 2, "mode": "nearest"}, "nearest"),
])
def test_invalid_arguments(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        TimeSynchronizer(**kwargs)


@pytest.mark.parametrize("stream", [-1, 2, 7])
def test_stream_index_out_of_range(stream):
    sync = TimeSynchronizer(2)
    with pytest.raises(ValueError, match=f"stream index {stream} "):
        sync.add(stream, 0, None, 0)
    assert sync.stats.frames_in == [0, 0]


# 8. Thread-safety


def test_stats_is_a_consistent_copy():
    sync = TimeSynchronizer(2)
    before = sync.stats
    add(sync, 0, 100 * MS)
    before.frames_in[1] = 99
    assert before.frames_in == [0, 99] and sync.stats.frames_in == [1, 0]


def test_add_and_take_wait_for_the_lock():
    sync = TimeSynchronizer(1)
    with sync._lock:
        workers = [threading.Thread(target=add, args=(sync, 0, 1)), threading.Thread(target=sync.take)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(0.02)
        assert all(w.is_alive() for w in workers)
    for w in workers:
        w.join()
    assert assert_accounted(sync).frames_in == [1]


def test_concurrent_producers_and_consumer():
    slop_ns, frames = 5 * MS, 2000
    sync = TimeSynchronizer(3, slop_ns=slop_ns, queue_size=5)
    taken: list[FrameSet] = []
    done = threading.Event()

    def produce(s: int) -> None:
        for k in range(frames):
            add(sync, s, k * PERIOD_NS + s * MS)

    def consume() -> None:
        while not done.is_set():
            fs = sync.take()
            if fs is not None:
                taken.append(fs)

    producers = [threading.Thread(target=produce, args=(s,)) for s in range(3)]
    consumer = threading.Thread(target=consume)
    for t in [consumer, *producers]:
        t.start()
    for t in producers:
        t.join()
    done.set()
    consumer.join()
    st = assert_accounted(sync)
    assert st.frames_in == [frames] * 3 and st.sets_taken == len(taken)
    for fs in taken:
        assert_valid(fs, slop_ns)
    newest_ns = [fs.newest_stamp_ns for fs in taken]
    assert newest_ns == sorted(set(newest_ns))


# Randomised property test


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jittered_cameras_property(seed):
    rng = random.Random(seed)
    slop_ns, cameras, frames = 10 * MS, 3, 1000
    sync = TimeSynchronizer(cameras, slop_ns=slop_ns, queue_size=5)
    events = []  # (arrival_ns, camera, stamp_ns): ±3 ms trigger jitter, 2..45 ms transport latency
    for c in range(cameras):
        for k in range(frames):
            stamp_ns = k * PERIOD_NS + c * MS + rng.randint(-3 * MS, 3 * MS)
            events.append((stamp_ns + rng.randint(2 * MS, 45 * MS), c, stamp_ns))
    events.sort()
    taken, consumer_free_ns = [], 0
    for arrival_ns, c, stamp_ns in events:
        add(sync, c, stamp_ns, arrival_ns)
        if arrival_ns >= consumer_free_ns:  # a network taking 0.1..1 s per set
            fs = sync.take()
            if fs is not None:
                assert fs.complete_ns <= arrival_ns
                taken.append(fs)
                consumer_free_ns = arrival_ns + rng.randint(100 * MS, 1000 * MS)
    st = assert_accounted(sync)
    assert sum(st.frames_in) == cameras * frames
    assert st.sets_formed > 0.9 * frames  # jitter stays within the slop, so nearly every trigger forms a set
    assert len(taken) == st.sets_taken > 50
    for fs in taken:
        assert_valid(fs, slop_ns)
    for earlier, later in zip(taken, taken[1:], strict=False):
        assert later.newest_stamp_ns > earlier.newest_stamp_ns
        assert all(b > a for a, b in zip(earlier.stamps_ns, later.stamps_ns, strict=True))


# Camera timeout: a silent camera does not stop the rig


def test_a_silent_camera_is_left_out_and_taken_back():
    sync = TimeSynchronizer(3, slop_ns=5 * MS, camera_timeout_ns=200 * MS)
    t = 0
    for _ in range(3):  # all three cameras
        for s in range(3):
            add(sync, s, t)
        assert sync.take().present == (0, 1, 2)
        t += PERIOD_NS
    add(sync, 2, t)  # camera 2's last frame before it goes silent: it must never appear in a later set
    stale = t
    for _ in range(12):  # 400 ms of cameras 0 and 1 only
        t += PERIOD_NS
        add(sync, 0, t)
        add(sync, 1, t)
    fs = sync.take(t + MS + sync.partial_hold_ns)
    assert fs.present == (0, 1) and fs.stamps_ns[2] is None and fs.items[2] is None
    assert fs.stamps_ns[:2] == (t, t) and sync.stats.silent == [2] and sync.stats.partial_sets >= 1
    assert all(stale not in q for q in sync.queued_stamps_ns())
    for _ in range(2):  # camera 2 is back: from its second frame on, sets need it again
        t += PERIOD_NS
        for s in range(3):
            add(sync, s, t)
    assert sync.take().present == (0, 1, 2) and sync.stats.silent == []
    assert_accounted(sync)


def test_a_camera_that_never_publishes_is_left_out_after_the_timeout():
    sync = TimeSynchronizer(2, slop_ns=5 * MS, camera_timeout_ns=100 * MS)
    assert not add(sync, 0, 0) and sync.silent_streams(50 * MS) == []
    for k in range(1, 4):  # camera 0 at 30 Hz for 100 ms: camera 1 is not silent yet
        assert not add(sync, 0, k * PERIOD_NS)
    assert add(sync, 0, 4 * PERIOD_NS)  # 133 ms of camera 0 sending: camera 1 has never sent a frame
    assert sync.take(4 * PERIOD_NS + MS + sync.partial_hold_ns).present == (0,)
    assert sync.silent_streams(4 * PERIOD_NS) == [1]
    sync_off = TimeSynchronizer(2, slop_ns=5 * MS)  # timeout 0: every set needs every camera, forever
    for k in range(20):
        assert not add(sync_off, 0, k * PERIOD_NS)


def test_a_far_future_stamp_costs_one_reset_not_the_stream():
    """A frame stamped 1000 s ahead (a bad clock) cannot hold the stream hostage: the next good frame resets."""
    sync = TimeSynchronizer(2, slop_ns=5 * MS)
    t = 0
    for _ in range(3):
        add(sync, 0, t)
        add(sync, 1, t)
        assert sync.take() is not None
        t += PERIOD_NS
    add(sync, 0, t + 1000 * 10**9)  # far future
    for _ in range(3):
        t += PERIOD_NS
        add(sync, 0, t)
        add(sync, 1, t)
    fs = sync.take()
    assert fs is not None and fs.stamps_ns == (t, t) and sync.stats.resets == 1
    assert_accounted(sync)


# Silence needs witnesses: a camera is silent only while the others keep sending (issue 15, item 1)


def test_after_a_pause_of_every_camera_the_first_to_send_is_not_alone():
    """A paused bag or simulator resumes: the first camera back waits for its partner, as at start-up."""
    sync = TimeSynchronizer(2, slop_ns=5 * MS, camera_timeout_ns=200 * MS)
    t = 0
    for _ in range(5):
        add(sync, 0, t)
        add(sync, 1, t)
        assert sync.take().present == (0, 1)
        t += PERIOD_NS
    t += 3_000 * MS  # everybody quiet for 3 s (15 timeouts)
    assert sync.silent_streams(t) == []  # nobody is silent while nobody sends
    assert not add(sync, 0, t)  # camera 0 back first: no 1-view set of it alone
    assert sync.peek() is None and sync.stats.partial_sets == 0 and sync.silent_streams(t + MS) == []
    assert add(sync, 1, t, t + 3 * MS)  # its partner 2 ms later: a complete set
    assert sync.take().present == (0, 1) and sync.stats.silent == []
    assert_accounted(sync)


def test_a_camera_silent_while_its_partner_resumes_is_left_out_only_after_the_timeout():
    sync = TimeSynchronizer(2, slop_ns=5 * MS, camera_timeout_ns=200 * MS)
    add(sync, 0, 0)
    add(sync, 1, 0)
    sync.take()
    t = 5_000 * MS  # both quiet; then only camera 0 comes back
    formed = []
    for k in range(12):  # 12 frames = 367 ms of camera 0 alone
        if add(sync, 0, t + k * PERIOD_NS):
            formed.append(k * PERIOD_NS)
    assert formed and min(formed) > 200 * MS  # left out only once camera 0 has sent for the whole timeout
    assert sync.silent_streams(t + 11 * PERIOD_NS + MS) == [1]


def test_a_reset_starts_the_silence_clocks_afresh():
    """What a lifecycle activate does: the cameras' old arrivals do not make anyone silent."""
    sync = TimeSynchronizer(2, slop_ns=5 * MS, camera_timeout_ns=200 * MS)
    for k in range(10):
        add(sync, 0, k * PERIOD_NS)
    assert sync.silent_streams(10 * PERIOD_NS) == [1]
    sync.reset()
    t = 20_000 * MS
    assert not add(sync, 0, t) and sync.silent_streams(t) == []


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SEGMENTS = st.lists(st.tuples(st.integers(1, 60), st.frozensets(st.integers(0, 2))), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(segments=_SEGMENTS, timeout_frames=st.integers(2, 20), seed=st.integers(0, 2**16))
def test_partial_sets_only_after_real_silence(segments, timeout_frames, seed):
    """Any sequence of cameras pausing, resuming and dying (every camera 30 Hz, jittered while it sends).

    Invariant: a stream left out of a set sent nothing for the whole timeout, while a stream in the set had
    been sending (no gap over half the timeout) for at least that long; and every set is within the slop.
    """
    rng = random.Random(seed)
    timeout_ns, slop_ns = timeout_frames * PERIOD_NS, 5 * MS
    sync = TimeSynchronizer(3, slop_ns=slop_ns, queue_size=5, camera_timeout_ns=timeout_ns)
    arrivals: list[list[int]] = [[], [], []]
    k = 0
    for frames, active in segments:
        for _ in range(frames):
            k += 1
            stamp = k * PERIOD_NS
            # arrival order varies per trigger; the synchroniser's clock (the arrival) never goes back
            for arrival, s in sorted((stamp + rng.randint(1 * MS, 4 * MS), s) for s in active):
                arrivals[s].append(arrival)
                add(sync, s, stamp, arrival)
                fs = sync.take(arrival)  # the consumer takes what it may at every arrival
                if fs is None:
                    continue
                assert fs.spread_ns <= slop_ns
                formed = fs.complete_ns
                for gone in set(range(3)) - set(fs.present):
                    # silent for the timeout before the set formed, and still silent when it is taken
                    assert not [a for a in arrivals[gone] if formed - timeout_ns <= a <= arrival]
                    quiet_since = max([a for a in arrivals[gone] if a <= formed], default=None)
                    assert any(_sending_since(arrivals[p], formed, timeout_ns, quiet_since) for p in fs.present)
    assert_accounted(sync)


def _sending_since(arrivals: list[int], now: int, timeout_ns: int, quiet_since: int | None) -> bool:
    """Stream sent frames, no gap over timeout/2, over a span > timeout ending now and after quiet_since."""
    mine = [a for a in arrivals if a <= now]
    start = mine[-1]
    for earlier in reversed(mine[:-1]):
        if 2 * (start - earlier) > timeout_ns:
            break
        start = earlier
    first = min(a for stream in [mine] for a in stream)
    return now - max(start, quiet_since if quiet_since is not None else first) > timeout_ns


# A camera back from a silence in a burst (issue 28)


def _burst_after_silence(first: int, seed: int) -> tuple[TimeSynchronizer, list[FrameSet], int]:
    """Run issue 28's sequence and return the synchroniser, the sets taken from the burst on, cam_b's return.

    cam_a (0) and cam_b (1) together, cam_b silent 3 s while cam_a sends at 4-9 Hz, then 30 whole sets in 0.5 s
    whose two frames arrive 0-3 ms apart, ``first`` first. The consumer takes at every arrival (idle).
    """
    rng = random.Random(seed)
    sync = TimeSynchronizer(2, slop_ns=20 * MS, queue_size=5, camera_timeout_ns=2_000 * MS)
    t = arrival = 0
    for _ in range(10):
        t, arrival = t + 100 * MS, arrival + 100 * MS
        add(sync, 0, t, arrival)
        add(sync, 1, t, arrival + 2 * MS)
        sync.take()
    silence_end = arrival + 3_000 * MS
    while arrival < silence_end:
        gap = rng.randint(110, 250) * MS
        t, arrival = t + gap, arrival + gap
        sync.take(arrival)
        add(sync, 0, t, arrival)
    assert sync.stats.silent == [1] and sync.stats.partial_sets > 0  # cam_a went on alone: real silence
    taken, back = [], None
    for _ in range(30):
        t, arrival = t + 16 * MS, arrival + rng.randint(14, 19) * MS
        second = arrival + rng.randint(0, 3) * MS
        for stream, at in ((first, arrival), (1 - first, second)):
            fs = sync.take(at)  # what an idle consumer took by now (it wakes when a held set's hold ends)
            add(sync, stream, t, at)
            back = at if back is None and stream == 1 else back
            taken += [s for s in (fs, sync.take(at)) if s is not None]
    return sync, taken, back


@pytest.mark.parametrize("first", [0, 1], ids=["cam_a_first", "cam_b_first"])
@pytest.mark.parametrize("seed", range(5))
def test_a_camera_back_from_silence_in_a_burst_never_goes_out_alone_nor_leaves_its_partner_alone(first, seed):
    """The burst right after cam_b's silence: every set handed out has both cameras.

    It failed on main before issue 28: the first frames of the burst went out as 1-view sets while the partner's
    frame of the same stamp arrived milliseconds later.
    """
    sync, taken, back = _burst_after_silence(first, seed)
    assert taken, "the burst produced no set"
    assert [fs.present for fs in taken] == [(0, 1)] * len(taken)
    assert all(fs.spread_ns <= sync.slop_ns for fs in taken)
    assert len(taken) >= 10  # whole sets go on through the burst (the consumer takes at every arrival)
    assert sync.stats.silent == []
    assert_accounted(sync)


def test_a_set_held_for_a_silent_camera_goes_out_after_the_hold_if_the_camera_stays_silent():
    """The hold costs latency only: a camera that really stays silent leaves its partner's sets to go out.

    Newer sets keep the first held set's deadline, so a 30 Hz camera is never starved by its own frames.
    """
    sync = TimeSynchronizer(2, slop_ns=5 * MS, camera_timeout_ns=200 * MS)
    k = 0
    while sync.peek() is None:
        add(sync, 0, k * PERIOD_NS)
        k += 1
    first = sync.peek()
    assert first.present == (0,) and sync.ready_in_ns(first.complete_ns) == sync.partial_hold_ns
    deadline = first.complete_ns + sync.partial_hold_ns
    taken = []
    for j in range(k, k + 30):  # 1 s more of camera 0 at 30 Hz; the consumer looks between frames
        now = (j - 1) * PERIOD_NS + MS + PERIOD_NS // 2
        if (fs := sync.take(now)) is not None:
            taken.append((now, fs))
        add(sync, 0, j * PERIOD_NS)
    assert taken and deadline <= taken[0][0] < deadline + PERIOD_NS  # not before the hold ends, nor long after
    assert taken[0][1].complete_ns > first.complete_ns  # the newest set by then, not the first held one
    assert len(taken) >= 30 * PERIOD_NS // (sync.partial_hold_ns + 2 * PERIOD_NS)  # one per hold: delayed, not starved
    assert sync.stats.partial_sets == len(taken)


def test_a_returning_frame_that_cannot_complete_the_held_set_keeps_it_from_going_out():
    """A camera back with an older frame (out of the slop): the held 1-view set never goes out; the next is whole."""
    sync = TimeSynchronizer(2, slop_ns=5 * MS, camera_timeout_ns=200 * MS)
    for k in range(12):
        add(sync, 0, k * PERIOD_NS)
    held = sync.peek()
    assert held is not None and held.present == (0,)
    add(sync, 1, 10 * PERIOD_NS, held.complete_ns + MS)  # cam 1 is back, with a frame older than the held set
    assert sync.ready_in_ns(held.complete_ns + 10 * sync.partial_hold_ns) is None
    assert sync.take(held.complete_ns + 10 * sync.partial_hold_ns) is None
    add(sync, 0, 12 * PERIOD_NS)
    add(sync, 1, 12 * PERIOD_NS)
    assert sync.take().present == (0, 1) and sync.stats.partial_sets == 0
    assert_accounted(sync)


def test_a_taken_set_names_the_sets_it_superseded_and_the_list_is_bounded(monkeypatch):
    """Sets formed while the consumer was busy are handed on as stamps (a gap rule must not see silence there)."""
    import da3_ros.core.sync as sync_module

    sync = TimeSynchronizer(2, mode=SyncMode.EXACT)
    for k in range(4):  # four whole sets, none taken: three superseded
        sync.add(0, k * 100 * MS, "a", k * 100 * MS)
        sync.add(1, k * 100 * MS, "b", k * 100 * MS)
    taken = sync.take()
    assert taken.stamps_ns == (300 * MS, 300 * MS)
    assert taken.superseded_stamps_ns == tuple((k * 100 * MS, k * 100 * MS) for k in range(3))
    sync.add(0, 400 * MS, "a", 400 * MS)
    sync.add(1, 400 * MS, "b", 400 * MS)
    assert sync.take().superseded_stamps_ns == ()  # only those since the last take
    monkeypatch.setattr(sync_module, "MAX_SUPERSEDED", 2)
    for k in range(5, 9):
        sync.add(0, k * 100 * MS, "a", k * 100 * MS)
        sync.add(1, k * 100 * MS, "b", k * 100 * MS)
    assert [s[0] for s in sync.take().superseded_stamps_ns] == [600 * MS, 700 * MS]  # the newest kept


def test_a_whole_rig_pausing_leaves_no_camera_silent_in_the_skew_of_their_last_frames():
    """Regression (a CI run's /diagnostics): both cameras stop, the right one's last frame 30 ms after the left's.

    For those 30 ms after the left camera's timeout ran out, the right one was still "sending" by the clock, so the
    left one was reported silent though the whole rig had paused. A camera that keeps sending still makes its
    partner silent once its own frames, not the clock, pass the timeout.
    """
    ms = 1_000_000
    sync = TimeSynchronizer(2, SyncMode.EXACT, camera_timeout_ns=500 * ms)
    for i in range(10):  # both at 5 Hz, the right camera 30 ms after the left
        sync.add(0, i * 200 * ms, None, i * 200 * ms)
        sync.add(1, i * 200 * ms, None, i * 200 * ms + 30 * ms)
    last_left = 9 * 200 * ms
    assert all(sync.silent_streams(last_left + dt * ms) == [] for dt in (490, 510, 525, 540, 900, 2000))
    for i in range(10, 14):  # the right camera goes on alone: the left one is silent once that passes 500 ms
        sync.add(1, i * 200 * ms, None, i * 200 * ms + 30 * ms)
    assert sync.silent_streams(13 * 200 * ms + 30 * ms) == [0]
