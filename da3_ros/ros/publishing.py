"""The node's publishers, and what one processed set publishes: only what somebody subscribes to.

Knows rclpy publishers (created on the node it is given), not the node's policy: which set to process and
what to count come from the core (da3_ros.ros.pipeline) and the node.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import LaserScan, PointCloud2
from tf2_msgs.msg import TFMessage

from da3_ros.core.config import OutputConfig
from da3_ros.ros import emit
from da3_ros.ros.emit import PER_CAMERA_OUTPUTS
from da3_ros.msg import MultiViewDepth

__all__ = ["PER_CAMERA_OUTPUTS", "SetPublishers", "qos_profile"]


def qos_profile(kind: str, depth: int) -> QoSProfile:
    """``sensor_data`` (best effort) or ``reliable``, with the history depth ``depth``."""
    if kind == "sensor_data":
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
    if kind == "reliable":
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
    raise ValueError(f"QoS must be sensor_data or reliable, got {kind!r}")


class SetPublishers:
    """Per-camera and set-wide publishers; ``publish`` sends one processed set to whoever listens."""

    def __init__(self, node, cameras: list[str], qos: QoSProfile, has_sky: bool, publish_mm: bool):
        self.node = node
        self.keys = emit.per_camera_keys(publish_mm, has_sky)
        self.per_camera = [{k: node.create_publisher(PER_CAMERA_OUTPUTS[k][1], emit.camera_topic(c, k), qos)
                            for k in self.keys} for c in cameras]
        self.fused = node.create_publisher(PointCloud2, emit.FUSED, qos)
        self.obstacles = node.create_publisher(PointCloud2, emit.OBSTACLES, qos)
        self.scan = node.create_publisher(LaserScan, emit.SCAN, qos)
        self.multiview = node.create_publisher(MultiViewDepth, emit.MULTIVIEW, qos)
        self.odometry = node.create_publisher(Odometry, emit.ODOMETRY, qos)
        self.tf = node.create_publisher(TFMessage, emit.TF, QoSProfile(depth=100))
        self.diag = node.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self._by_topic = {emit.camera_topic(c, k): pub for c, pubs in zip(cameras, self.per_camera)
                          for k, pub in pubs.items()}
        self._by_topic.update({emit.FUSED: self.fused, emit.OBSTACLES: self.obstacles, emit.SCAN: self.scan,
                               emit.MULTIVIEW: self.multiview, emit.ODOMETRY: self.odometry, emit.TF: self.tf})

    def _all(self) -> list:
        return [p for pubs in self.per_camera for p in pubs.values()] + [
            self.fused, self.obstacles, self.scan, self.multiview, self.odometry, self.tf, self.diag]

    def destroy(self) -> None:
        for pub in self._all():
            self.node.destroy_publisher(pub)

    def wanted(self, out: OutputConfig, tf_applies: bool) -> bool:
        """Is a set worth a forward for who listens? (no: it is skipped; ``OutputConfig.forward_wanted``)."""
        outputs = any(p.get_subscription_count() for p in self._all() if p not in (self.tf, self.diag))
        return out.forward_wanted(outputs, self.tf.get_subscription_count() > 0, tf_applies)

    def wants_nav(self) -> bool:
        return bool(self.obstacles.get_subscription_count() or self.scan.get_subscription_count())

    def _listened(self, topic: str) -> bool:
        return topic == emit.TF or self._by_topic[topic].get_subscription_count() > 0

    def publish(self, out, wants_nav: bool, failed: Callable[[str, str], None]) -> dict[str, float]:
        """Publish ``out`` (one set's SetResult) to whoever listens; returns the stage times (publish, nav).

        What the set emits is decided by da3_ros.ros.emit (shared with the bag writer); each output it withholds
        is reported through ``failed(counter, text)``, once per reason; the others go on.
        """
        t0 = time.perf_counter()
        notes = []
        for item in emit.set_messages(out, self.keys, self._listened):
            if isinstance(item, emit.Withheld):
                notes.append(item)
            else:
                self._by_topic[item.topic].publish(item.msg)
        t_nav = time.perf_counter()
        if wants_nav:
            for item in emit.nav_messages(out, self._listened):
                if isinstance(item, emit.Withheld):
                    notes.append(item)
                else:
                    self._by_topic[item.topic].publish(item.msg)
        for counter, text in emit.reasons(notes).items():
            failed(counter, text)
        t_end = time.perf_counter()
        return {"publish": t_end - t0, **({"nav": t_end - t_nav} if wants_nav else {})}
