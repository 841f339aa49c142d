"""The node's worker thread: takes each synchronised set, runs the per-set policy, publishes the result.

A mixin of the node's phases (``ros.node.DepthPipeline``). One set at a time, off the executor thread; a
set that fails is dropped and counted, never the node. Stopping is a handshake (``_stop_worker``): a worker
inside a set is waited for, or the stop is taken back (lifecycle deactivate refused).
"""
from __future__ import annotations

import threading
import time

from da3_ros.engines.base import EngineUnavailable
from da3_ros.ros import conversions as conv
from da3_ros.core.processor import DropReason, Dropped
from da3_ros.ros.ros_main import abandon_on_exit, set_failure_text

DEACTIVATE_WAIT_MIN_S = 5.0  # deactivate waits at least this long for a set in flight before refusing


class SetWorker:
    """The worker thread's life (start, stop handshake) and what it does with each set."""

    # Class-level, so that destroying a node whose construction failed half-way finds them (no second traceback)
    _worker: threading.Thread | None = None
    _worker_exiting = False  # the worker has decided to exit (a deactivate can no longer be refused)
    _longest_set_s = 0.0  # the longest set the worker took so far (deactivate waits twice that)

    def _start_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():  # never a second worker beside a busy one
            raise RuntimeError("activate while the previous worker is still running (deactivate refused it)")
        self._stop_lock = threading.Lock()  # the worker's decision to exit vs. a refused deactivate
        self._stop.clear()
        self._worker_exiting = False
        self._worker = threading.Thread(target=self._work, name="da3_worker", daemon=True)
        self._worker.start()
        abandon_on_exit(self._worker)  # shutdown never waits for the set in flight

    def _stop_worker(self, wait_s: float | None) -> bool:
        """Tell the worker to stop; False (still running, stop taken back) if it is inside a set after ``wait_s``.

        ``None``: the process is ending: the worker (a daemon thread) is told to stop and not waited for; the
        set in flight is dropped, never published (the context is down).
        """
        if self._worker is None:
            return True
        with self._stop_lock:
            self._stop.set()
        self._wake.set()  # an idle worker stops now, not at its next poll
        if wait_s is not None:
            self._worker.join(timeout=wait_s)
            with self._stop_lock:
                if not self._worker_exiting:  # still inside a set: take the stop back, stay active
                    self._stop.clear()
                    return False
            self._worker.join()  # it has decided to exit: a return away
        self._worker = None
        return True

    def _deactivate_wait_s(self) -> float:
        """How long deactivate waits for a set in flight: twice the longest set so far, at least a few seconds."""
        return max(DEACTIVATE_WAIT_MIN_S, 2.0 * self._longest_set_s)

    def _wanted(self) -> bool:
        out = self.config.out
        return self.pubs.wanted(out, self.rig.engine.variant.has_pose and (
            out.tf_mode != "off" or (self.rig.temporal is not None and out.odom_tf)))

    def _should_stop(self) -> bool:
        """The worker's check: once it says True the worker exits, and a deactivate can no longer be refused."""
        with self._stop_lock:
            self._worker_exiting = self._stop.is_set()
            return self._worker_exiting

    def _work(self) -> None:
        self.get_logger().info("worker started")
        try:
            self._work_loop()
        except Exception:
            if self.context.ok() and not self._stop.is_set():
                raise
            # shutdown destroyed the node under the worker (it is not waited for): nothing left to report
        finally:
            if self.context.ok():  # (tests count these: never two workers at once)
                self.get_logger().info("worker stopped")

    def _work_loop(self) -> None:
        while not self._should_stop():
            # A set without a silent camera is held briefly (a returning camera may still complete it): come
            # back when its hold ends, not only when woken.
            held_ns = self.sync.ready_in_ns(time.monotonic_ns())
            self._wake.wait(timeout=0.2 if held_ns is None else min(0.2, held_ns / 1e9))
            self._wake.clear()
            if self._stop.is_set():  # woken to stop: decided at the loop's top
                continue
            frameset = self.sync.take(time.monotonic_ns())
            if frameset is None:
                continue
            if not self._wanted():
                self.stats.count("skipped_no_subscribers")
                continue
            t0 = time.monotonic()
            try:
                self._process(frameset)
            except conv.ConversionError as exc:
                self.stats.count("bad_input")
                self.get_logger().error(f"dropped a set: {exc}", throttle_duration_sec=5.0)
            except EngineUnavailable as exc:  # a remote engine down or late: dropped, counted; it reconnects
                self.stats.count("engine_unavailable")
                self.get_logger().warning(f"dropped a set: {exc}", throttle_duration_sec=5.0)
            except Exception as exc:  # the node must survive anything one set can do
                if not self.context.ok():  # shutting down (Ctrl-C): publishers are gone, nothing to report
                    return
                self.stats.count("errors")
                self.get_logger().error(f"set failed: {set_failure_text(exc)}", throttle_duration_sec=5.0)
            self._longest_set_s = max(self._longest_set_s, time.monotonic() - t0)

    def _process(self, frameset) -> None:
        for stamps_ns in frameset.superseded_stamps_ns:  # seen while busy: no silence for the temporal window
            if stamps_ns[self.config.ref] is not None:
                self.core.frames.skipped(stamps_ns[self.config.ref])
        items = [None if data is None else t.decode(data)  # None: a silent camera; ConversionError: bad_input
                 for t, data in zip(self._transports, frameset.items)]
        pending = [info is None and bool(self.count_publishers(topic))
                   for info, topic in zip(self._infos, self._info_topics)]
        wants_nav = self.pubs.wants_nav()
        ref_stamp_ns = frameset.stamps_ns[self.config.ref]
        ranges = None if self.ranges is None else self.ranges.for_set(
            frameset.newest_stamp_ns if ref_stamp_ns is None else ref_stamp_ns)
        done = self.core.process(items, list(self._infos), pending, wants_nav, ranges)
        if isinstance(done, Dropped):
            if done.reason is DropReason.BAD_INPUT:
                self.stats.count("bad_input")
                self.get_logger().error(f"dropped a set: {done.detail}", throttle_duration_sec=5.0)
                return
            self.stats.count("waiting_for_cameras")
            if done.reason is DropReason.WAITING_FOR_CONDITIONING:
                self.get_logger().warning(done.detail, throttle_duration_sec=10.0)
            return
        out = done.outputs
        self._camera_frames.update(out.frame_ids)
        timing = self.pubs.publish(out, wants_nav, self._output_failed)
        stamp_age_s = (self.get_clock().now().nanoseconds - frameset.newest_stamp_ns) / 1e9
        self.stats.set_scale(out.pred, self.rig.scale, self.core.without_K)
        if out.result.range_fit is not None and self.ranges is not None:
            self.stats.set_range(out.result.range_fit, self.ranges.latest.stale)
        step = out.result.temporal
        if step is not None and self.rig.temporal is not None:
            self.stats.set_temporal(step, dict(self.rig.temporal.reset_counts))
            if step.chain.restart is not None:
                self.get_logger().warning(f"temporal chain restarted ({step.chain.restart.value}): "
                                          f"{step.chain.restart_detail}", throttle_duration_sec=5.0)
        self.stats.set_done(sync_wait=(frameset.complete_ns - frameset.first_arrival_ns) / 1e9, **done.timing_s,
                            **timing, latency=stamp_age_s, clouds=out.clouds_built)

    def _output_failed(self, counter: str, text: str) -> None:
        """An output the set withheld (da3_ros.ros.emit): counted; said at most every 5 s per reason."""
        self.stats.count(counter)
        now = time.monotonic()
        if now - self._said_at.get(counter, -1e9) >= 5.0:
            self._said_at[counter] = now
            self.get_logger().warning(text)
