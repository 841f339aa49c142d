"""The node's publishers, and what one processed set publishes: only what somebody subscribes to.

Knows rclpy publishers (created on the node it is given), not the node's policy: which set to process and
what to count come from the core (da3_ros.pipeline) and the node.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2
from tf2_msgs.msg import TFMessage

from da3_ros import conversions as conv
from da3_ros.msg import MultiViewDepth

PER_CAMERA_OUTPUTS = {  # output -> (topic under <camera>/, type)
    "depth": ("depth/image", Image), "depth_mm": ("depth/image_mm", Image),
    "camera_info": ("depth/camera_info", CameraInfo), "confidence": ("confidence/image", Image),
    "sky": ("sky/mask", Image), "points": ("points", PointCloud2),
}


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
        keys = [k for k in PER_CAMERA_OUTPUTS if (k != "depth_mm" or publish_mm) and (k != "sky" or has_sky)]
        self.per_camera = [{k: node.create_publisher(PER_CAMERA_OUTPUTS[k][1], f"{c}/{PER_CAMERA_OUTPUTS[k][0]}", qos)
                            for k in keys} for c in cameras]
        self.fused = node.create_publisher(PointCloud2, "points_fused", qos)
        self.obstacles = node.create_publisher(PointCloud2, "points_obstacles", qos)
        self.scan = node.create_publisher(LaserScan, "scan", qos)
        self.multiview = node.create_publisher(MultiViewDepth, "multiview_depth", qos)
        self.tf = node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
        self.diag = node.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))

    def _all(self) -> list:
        return [p for pubs in self.per_camera for p in pubs.values()] + [
            self.fused, self.obstacles, self.scan, self.multiview, self.tf, self.diag]

    def destroy(self) -> None:
        for pub in self._all():
            self.node.destroy_publisher(pub)

    def wanted(self, tf_applies: bool) -> bool:
        """Does anybody listen to an output of a set? (no: the forward is skipped)."""
        pubs = [p for p in self._all() if p not in (self.tf, self.diag)] + ([self.tf] if tf_applies else [])
        return any(p.get_subscription_count() for p in pubs)

    def wants_nav(self) -> bool:
        return bool(self.obstacles.get_subscription_count() or self.scan.get_subscription_count())

    def publish(self, out, cameras: list[int], wants_nav: bool,
                failed: Callable[[str, str], None]) -> dict[str, float]:
        """Publish ``out`` (SetOutputs of rig cameras ``cameras``); returns the stage times (publish, nav).

        An output that cannot be built is reported through ``failed(counter, text)``; the others go on.
        """
        t0 = time.perf_counter()
        for j, i in enumerate(cameras):  # j: index in this set, i: camera of the rig
            for key, pub in self.per_camera[i].items():
                if pub.get_subscription_count():
                    msg = getattr(out, key)(j)
                    if msg is not None:
                        pub.publish(msg)
        if self.fused.get_subscription_count():
            try:
                fused = out.fused()
            except ValueError as exc:  # fused_frame names no camera frame of this rig: the other outputs go on
                fused = None
                failed("errors", f"points_fused: {exc}")
            if fused is not None:
                self.fused.publish(fused)
        if self.multiview.get_subscription_count():
            self.multiview.publish(out.multiview())
        transforms = out.transforms()
        if transforms:
            self.tf.publish(conv.tf_message(transforms))
        t_nav = time.perf_counter()
        if wants_nav:
            try:
                for pub, make in ((self.obstacles, out.obstacles), (self.scan, out.scan)):
                    if pub.get_subscription_count():
                        pub.publish(make())
            except ValueError as exc:  # a missing TF link, no intrinsics, no ground plane: said, counted
                failed("nav_unavailable", f"points_obstacles / scan: {exc}")
        t_end = time.perf_counter()
        return {"publish": t_end - t0, **({"nav": t_end - t_nav} if wants_nav else {})}
