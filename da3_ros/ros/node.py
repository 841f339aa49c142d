"""``depth_node``: N synchronized cameras -> ONE DA3 forward -> depth, confidence, camera_info, clouds, TF.

Wiring only: parameters (da3_ros.ros.ros_params), subscriptions, publishers (da3_ros.ros.publishing), a worker thread
and diagnostics. The policy lives in the ROS-free core: the rig from the parameters (rig_setup), each set's
handling (pipeline), sync, engines, geometry, outputs.
"""
from __future__ import annotations

import gc
import threading
import time

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo
from tf2_msgs.msg import TFMessage

from da3_ros.ros import conversions as conv
from da3_ros.ros.diagnostics import NodeStats
from da3_ros.engines.base import EngineUnavailable
from da3_ros.ros.pipeline import DropReason, Dropped, SetProcessor, failure_text
from da3_ros.ros.publishing import PER_CAMERA_OUTPUTS, SetPublishers, qos_profile
from da3_ros.core.rig_setup import build_rig
from da3_ros.engines import engine_from_config
from da3_ros.ros.ros_main import abandon_on_exit, run
from da3_ros.ros.ros_params import ParameterWiring
from da3_ros.core.static_tf import StaticTfBuffer
from da3_ros.core.sync import SyncMode, TimeSynchronizer
from da3_ros.ros.transport import input_transport

__all__ = ["PER_CAMERA_OUTPUTS", "DepthNode", "DepthPipeline", "main"]
DEACTIVATE_WAIT_MIN_S = 5.0  # deactivate waits at least this long for a set in flight before refusing


class DepthPipeline(ParameterWiring):
    """The node's wiring in lifecycle phases, for a ``Node`` (all at once) or a ``LifecycleNode`` (on command).

    declare (parameters) -> configure (engine, publishers) -> activate (subscriptions, worker, diagnostics)
    -> deactivate (all of those stopped) -> cleanup (publishers and engine released).
    """

    # Class-level, so that destroying a node whose construction failed half-way finds them (no second traceback)
    _worker: threading.Thread | None = None
    _active = False
    _worker_exiting = False  # the worker has decided to exit (a deactivate can no longer be refused)
    _longest_set_s = 0.0  # the longest set the worker took so far (deactivate waits twice that)

    def _declare(self) -> None:
        super()._declare()
        self._subs: list = []
        self._diag_timer = None
        self._stop = threading.Event()
        self._said_at: dict[str, float] = {}  # per withheld-output reason, when it was last logged

    def _configure(self) -> None:
        self.rig = self._build_rig()
        if self.config.value("depth.publish_mm") and self.rig.engine.variant.depth_kind.value == "relative":
            self.get_logger().warning(f"depth.publish_mm with {self.rig.engine.variant.name}: its depth is relative, "
                                   "so depth/image_mm is not millimetres")
        self.stats = NodeStats(list(self.config.cameras), self.rig.engine.backend)
        self.sync = TimeSynchronizer(len(self.config.cameras), SyncMode(self.config.value("sync.mode")),
                                     int(self.config.value("sync.slop_s") * 1e9), self.config.value("sync.queue_size"),
                                     camera_timeout_ns=int(self.config.value("sync.camera_timeout_s") * 1e9))
        self._infos: list[CameraInfo | None] = [None] * len(self.config.cameras)
        self._wake = threading.Event()
        self.static_tf = StaticTfBuffer()
        self.core = self._make_core()
        v = self.config.value
        self.pubs = SetPublishers(self, list(self.config.cameras), qos_profile(v("qos.output"), v("qos.depth")),
                                  self.rig.engine.variant.has_sky, v("depth.publish_mm"))
        self._info_topics = [self.config.topics(c)[1] for c in self.config.cameras]
        self.get_logger().info(
            f"model {self.rig.engine.label} on {self.rig.engine.describe()}; cameras {list(self.config.cameras)}, "
            f"reference {self.config.reference_camera}; pose conditioning: {self.config.value('pose_conditioning')} "
            f"({'parameters' if self.rig.T_ref_cam_known is not None else 'from /tf_static when available'})")

    def _activate(self) -> None:
        if self._worker is not None and self._worker.is_alive():  # never a second worker beside a busy one
            raise RuntimeError("activate while the previous worker is still running (deactivate refused it)")
        self._create_subscriptions()
        self._stop_lock = threading.Lock()  # the worker's decision to exit vs. a refused deactivate
        self._stop.clear()
        self._worker_exiting = False
        self._worker = threading.Thread(target=self._work, name="da3_worker", daemon=True)
        self._worker.start()
        abandon_on_exit(self._worker)  # shutdown never waits for the set in flight
        self._diag_timer = self.create_timer(self.config.value("diagnostics_period_s"), self._publish_diagnostics)

    def _deactivate(self, wait_s: float | None = None) -> bool:
        """Stop the subscriptions, the worker and /diagnostics; False (nothing stopped) if the worker is busy.

        ``wait_s``: how long a set in flight may take to end (lifecycle deactivate). A worker still inside a
        set after that (a long forward, an export, a TensorRT build) is left running, as is everything else:
        the caller refuses the transition. ``None``: the process is ending: the worker (a daemon thread) is
        told to stop and not waited for; the set in flight is dropped, never published (the context is down).
        """
        if self._worker is not None:
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
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        return True

    def _deactivate_wait_s(self) -> float:
        """How long deactivate waits for a set in flight: twice the longest set so far, at least a few seconds."""
        return max(DEACTIVATE_WAIT_MIN_S, 2.0 * self._longest_set_s)

    def _cleanup(self) -> None:
        self.pubs.destroy()
        self.rig = self.core = None  # the engine (weights, sessions) goes with them
        gc.collect()
        self.get_logger().info("engine released")

    # --- set-up ----------------------------------------------------------------------------------------
    def _build_rig(self):
        return build_rig(self.config, engine_from_config(self.config), self.get_logger().warning)

    def _create_subscriptions(self) -> None:
        qin = qos_profile(self.config.value("qos.input"), self.config.value("qos.depth"))
        self.sync.reset()  # an activation starts the synchroniser afresh: no frame or silence from before it
        self._transports = [input_transport(self.config.camera(c, "transport")) for c in self.config.cameras]
        for i, (c, transport) in enumerate(zip(self.config.cameras, self._transports)):
            base_topic, info_topic = self.config.topics(c)
            image_topic = transport.topic(base_topic)  # <image_topic>/compressed for compressed
            events = SubscriptionEventCallbacks(incompatible_qos=lambda e, t=image_topic: self._incompatible(t, e))
            # raw=True: frames arrive as CDR bytes; only those of the set that gets processed are deserialised
            # (and decoded, when compressed)
            self._subs.append(self.create_subscription(transport.msg_type, image_topic,
                                                       lambda m, i=i: self._on_image(i, m), qin,
                                                       event_callbacks=events, raw=True))
            self._subs.append(self.create_subscription(CameraInfo, info_topic, lambda m, i=i: self._on_info(i, m),
                                                       qin))
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs.append(self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, latched))

    # --- callbacks (executor thread) -------------------------------------------------------------------
    def _incompatible(self, topic: str, event) -> None:
        self.stats.count("incompatible_qos")
        self.get_logger().warning(
            f"a publisher on {topic} offers an incompatible QoS (policy {event.last_policy_kind}); no images will "
            f"arrive from it: set qos.input to match (now {self.config.value('qos.input')})")

    def _on_tf_static(self, msg: TFMessage) -> None:
        for t in msg.transforms:
            self.static_tf.add(t.header.frame_id, t.child_frame_id, conv.transform_to_T(t.transform))

    def _on_info(self, i: int, msg: CameraInfo) -> None:
        self._infos[i] = msg

    def _on_image(self, i: int, data: bytes) -> None:
        self.stats.frame_in(i)
        try:
            stamp_ns = conv.stamp_ns_from_cdr(data)  # 12 bytes read; most frames are superseded unread
        except conv.ConversionError as exc:
            self.stats.count("bad_input")
            self.get_logger().error(f"{self.config.cameras[i]}: {exc}", throttle_duration_sec=5.0)
            return
        if self.sync.add(i, stamp_ns, data, time.monotonic_ns()):
            self._wake.set()

    # --- worker thread ---------------------------------------------------------------------------------
    def _wanted(self) -> bool:
        return self.pubs.wanted(self.rig.engine.variant.has_pose and self.config.out.tf_mode != "off")

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
            if not self._wake.wait(timeout=0.2):
                continue
            self._wake.clear()
            if self._stop.is_set():  # woken to stop: decided at the loop's top
                continue
            frameset = self.sync.take()
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
                self.get_logger().error(f"set failed: {failure_text(exc)}", throttle_duration_sec=5.0)
            self._longest_set_s = max(self._longest_set_s, time.monotonic() - t0)

    def _make_core(self) -> SetProcessor:
        """The per-set policy (da3_ros.ros.pipeline), shared with ``da3-ros bag``."""
        return SetProcessor(self.rig, self.config.core_config(), self.static_tf,
                            warn=self.get_logger().warning,  # each note said once
                            prepare_fallback=True)  # a camera may go silent: its (N-1)-view graph ahead

    def _process(self, frameset) -> None:
        items = [None if data is None else t.decode(data)  # None: a silent camera; ConversionError: bad_input
                 for t, data in zip(self._transports, frameset.items)]
        pending = [info is None and bool(self.count_publishers(topic))
                   for info, topic in zip(self._infos, self._info_topics)]
        wants_nav = self.pubs.wants_nav()
        done = self.core.process(items, list(self._infos), pending, wants_nav)
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
        timing = self.pubs.publish(out, wants_nav, self._output_failed)
        stamp_age_s = (self.get_clock().now().nanoseconds - frameset.newest_stamp_ns) / 1e9
        self.stats.set_scale(out.pred, self.rig.scale, self.core.without_K)
        self.stats.set_done(sync_wait=(frameset.complete_ns - frameset.first_arrival_ns) / 1e9, **done.timing_s,
                            **timing, latency=stamp_age_s, clouds=out.clouds_built)

    def _output_failed(self, counter: str, text: str) -> None:
        """An output the set withheld (da3_ros.ros.emit): counted; said at most every 5 s per reason."""
        self.stats.count(counter)
        now = time.monotonic()
        if now - self._said_at.get(counter, -1e9) >= 5.0:
            self._said_at[counter] = now
            self.get_logger().warning(text)

    # --- diagnostics -----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        silent = [self.config.cameras[i] for i in self.sync.silent_streams(time.monotonic_ns())]
        msg = self.stats.diagnostics(self.get_name(), self.sync.stats, self.rig.engine.health(), silent,
                                     self.config.reference_camera)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pubs.diag.publish(msg)



class DepthNode(DepthPipeline, Node):
    """The da3_ros node, configured and active from the start; see README for topics, parameters, frames."""

    def __init__(self, **kwargs):
        super().__init__("da3_depth", **kwargs)
        self._declare()
        self._watch_parameters()
        self._configure()
        self._activate()

    def destroy_node(self):
        if self._worker is not None:
            self._deactivate()  # not waited for: the process is ending, a set in flight is dropped
        return super().destroy_node()


def main(args=None) -> int:
    return run(DepthNode, args, "da3_depth")
