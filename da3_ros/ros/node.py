"""``depth_node``: N synchronized cameras -> ONE DA3 forward -> depth, confidence, camera_info, clouds, TF.

Wiring only, in lifecycle phases: parameters into the config (ros_params), inputs (inputs), publishers
(publishing), the worker thread (worker) and /diagnostics. The policy lives below: the config, rig and
sync in the ROS-free core, each set's handling in the per-set processor (pipeline), the runtimes in engines.
"""
from __future__ import annotations

import gc
import threading
import time

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo

from da3_ros.core.errors import ConfigError
from da3_ros.core.rig_setup import build_rig
from da3_ros.core.static_tf import TfBuffer
from da3_ros.core.temporal.keyframes import ResetReason
from da3_ros.core.sync import SyncMode, TimeSynchronizer
from da3_ros.engines import engine_from_config
from da3_ros.engines.fixed_shape import AHEAD
from da3_ros.ros.diagnostics import NodeStats
from da3_ros.ros.inputs import InputWiring
from da3_ros.ros.pipeline import SetProcessor
from da3_ros.ros.range_inputs import RangeTopics
from da3_ros.ros.publishing import PER_CAMERA_OUTPUTS, SetPublishers, qos_profile
from da3_ros.ros.ros_main import run
from da3_ros.ros.ros_params import ParameterWiring
from da3_ros.ros.worker import SetWorker

__all__ = ["PER_CAMERA_OUTPUTS", "DepthNode", "DepthPipeline", "main"]


class DepthPipeline(ParameterWiring, InputWiring, SetWorker):
    """The node's wiring in lifecycle phases, for a ``Node`` (all at once) or a ``LifecycleNode`` (on command).

    declare (parameters) -> configure (engine, publishers) -> activate (subscriptions, worker, diagnostics)
    -> deactivate (all of those stopped) -> cleanup (publishers and engine released).
    """

    _active = False  # class-level: destroying a node whose construction failed half-way finds it

    def _declare(self) -> None:
        super()._declare()
        self._subs: list = []
        self._diag_timer = None
        self._stop = threading.Event()
        self._said_at: dict[str, float] = {}  # per withheld-output reason, when it was last logged
        self._camera_frames: set[str] = set()  # the rig's optical frames seen (tf.mode camera_frames moves them)

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
        self.static_tf = TfBuffer()  # /tf_static; and /tf, with range sensors (their chain at a message's stamp)
        self.ranges = RangeTopics(self.config.range_sources, self.config.range_fit) if self.config.range_sources \
            else None
        self.core = self._make_core()
        v = self.config.value
        self.pubs = SetPublishers(self, list(self.config.cameras), qos_profile(v("qos.output"), v("qos.depth")),
                                  self.rig.engine.variant.has_sky, v("depth.publish_mm"))
        self._info_topics = [self.config.topics(c)[1] for c in self.config.cameras]
        if self.ranges is not None:  # never the node's own scan or clouds as a range sensor
            try:
                self.ranges.refuse_own_outputs(self.resolve_topic_name, {p.topic_name for p in self.publishers})
            except ConfigError:
                self.pubs.destroy()  # a lifecycle configure may be retried: nothing left behind
                raise
        self.get_logger().info(
            f"model {self.rig.engine.label} on {self.rig.engine.describe()}; cameras {list(self.config.cameras)}, "
            f"reference {self.config.reference_camera}; pose conditioning: {self.config.value('pose_conditioning')} "
            f"({'parameters' if self.rig.T_ref_cam_known is not None else 'from /tf_static when available'})")

    def _activate(self) -> None:
        if self._worker is not None and self._worker.is_alive():  # never a second worker beside a busy one
            raise RuntimeError("activate while the previous worker is still running (deactivate refused it)")
        self._create_subscriptions()
        self.core.frames.reset_temporal(ResetReason.REACTIVATED, "the node was activated again")
        self._start_worker()
        self._diag_timer = self.create_timer(self.config.value("diagnostics_period_s"), self._publish_diagnostics)

    def _deactivate(self, wait_s: float | None = None) -> bool:
        """Stop the worker, the subscriptions and /diagnostics; False (nothing stopped) if the worker is busy.

        ``wait_s``: how long a set in flight may take to end (lifecycle deactivate). A worker still inside a
        set after that (a long forward, an export, a TensorRT build) is left running, as is everything else:
        the caller refuses the transition. ``None``: the process is ending (see ``SetWorker._stop_worker``).
        """
        if not self._stop_worker(wait_s):
            return False
        self._destroy_subscriptions()
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        return True

    def _cleanup(self) -> None:
        self.pubs.destroy()
        AHEAD.cancel()  # graphs queued ahead for the engine released here (an export in progress ends by itself)
        self.rig = self.core = None  # the engine (weights, sessions) goes with them
        gc.collect()
        self.get_logger().info("engine released")

    def _build_rig(self):
        return build_rig(self.config, engine_from_config(self.config), self.get_logger().warning)

    def _make_core(self) -> SetProcessor:
        """The per-set policy (da3_ros.ros.pipeline), shared with ``da3-ros bag``."""
        return SetProcessor(self.rig, self.config.core_config(), self.static_tf,
                            warn=self.get_logger().warning,  # each note said once
                            prepare_fallback=True)  # its other graphs ahead: silent cameras, window sizes

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
