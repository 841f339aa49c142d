"""The node's inputs: image (raw CDR, for the synchroniser), camera_info, /tf_static and range subscriptions.

A mixin of the node's phases (``ros.node.DepthPipeline``): subscriptions are made on activate and destroyed
on deactivate; callbacks run on the executor thread and only record (frames into the synchroniser).
"""
from __future__ import annotations

import time

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from da3_ros.ros import conversions as conv
from da3_ros.ros.compat import SubscriptionEventCallbacks
from da3_ros.ros.publishing import qos_profile
from da3_ros.ros.transport import input_transport


class InputWiring:
    """Subscriptions of every camera (its transport's topic and type) and of /tf_static."""

    def _create_subscriptions(self) -> None:
        qin = qos_profile(self.config.value("qos.input"), self.config.value("qos.depth"))
        self.sync.reset()  # an activation starts the synchroniser afresh: no frame or silence from before it
        self._transports = [input_transport(self.config.camera(c, "transport")) for c in self.config.cameras]
        # video: one decoder per camera, fed every packet on arrival (a fresh one per activation: the packets
        # missed while inactive break the stream, so it restarts at a keyframe)
        self._streams = [t.stream() if t.video else None for t in self._transports]
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
        if self.ranges is not None:  # metric.range_topics: sensors are not triggered with the cameras
            self._subs += self.ranges.subscribe(self.create_subscription, qos_profile_sensor_data)
            self._subs.append(self.create_subscription(TFMessage, "/tf", self._on_tf, QoSProfile(depth=100)))

    def _incompatible(self, topic: str, event) -> None:
        self.stats.count("incompatible_qos")
        self.get_logger().warning(
            f"a publisher on {topic} offers an incompatible QoS (policy {event.last_policy_kind}); no images will "
            f"arrive from it: set qos.input to match (now {self.config.value('qos.input')})")

    def _on_tf_static(self, msg: TFMessage) -> None:
        for t in msg.transforms:
            self.static_tf.add(t.header.frame_id, t.child_frame_id, conv.transform_to_T(t.transform))

    def _on_tf(self, msg: TFMessage) -> None:
        """/tf edges, for a range sensor's chain at its message's stamp; never the frames this node publishes."""
        suffix = self.config.out.tf_suffix
        for t in msg.transforms:
            child = t.child_frame_id
            if child.endswith(suffix) or child == self.config.out.odom_child_frame or (
                    self.config.out.tf_mode == "camera_frames" and child in self._camera_frames):
                continue  # our own estimates: a range chain through them would measure DA3 against itself
            try:
                self.static_tf.add_timed(t.header.frame_id, child, conv.transform_to_T(t.transform),
                                         conv.stamp_to_ns(t.header.stamp))
            except ValueError:  # an empty or self-referencing edge: not a transform of anything
                continue

    def _on_info(self, i: int, msg: CameraInfo) -> None:
        self._infos[i] = msg

    def _on_image(self, i: int, data: bytes) -> None:
        self.stats.frame_in(i)
        try:
            if self._streams[i] is not None:  # video: decoded now, in order; the Image goes to the synchroniser
                data = self._streams[i].feed(data)
                if not isinstance(data, Image):
                    self._video_dropped(i, data)
                    return
                stamp_ns = conv.stamp_to_ns(data.header.stamp)
            else:
                stamp_ns = conv.stamp_ns_from_cdr(data)  # 12 bytes read; most frames are superseded unread
        except conv.ConversionError as exc:
            self.stats.count("bad_input")
            self.get_logger().error(f"{self.config.cameras[i]}: {exc}", throttle_duration_sec=5.0)
            return
        if self.sync.add(i, stamp_ns, data, time.monotonic_ns()):
            self._wake.set()

    def _video_dropped(self, i: int, reason) -> None:
        """A video packet not decoded (None: the decoder holds its frame back, not a drop): counted by reason."""
        if reason is not None:
            self.stats.video_drop(reason.value)
            self.get_logger().warning(f"{self.config.cameras[i]}: video packet dropped ({reason.value})",
                                      throttle_duration_sec=5.0)

    def _destroy_subscriptions(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
