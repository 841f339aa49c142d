"""The range sensors' topics (``metric.range_topics``): their latest messages, and per set the ones to fit.

Callbacks only record (the message and its stamp); the worker picks, per set, each topic's message nearest
the set's reference stamp within ``metric.range_slop_s`` and converts just those. ``da3-ros bag`` feeds the
same class from the bag's messages, so the node and the bag fit the same returns. Knows message types, never
rclpy's node API (the node passes its ``create_subscription``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sensor_msgs.msg import CameraInfo

from da3_ros.core.errors import ConfigError
from da3_ros.core.range_scale import LatestByStamp, RangeFitConfig, RangeKind, RangeReading, RangeSet, RangeSource
from da3_ros.ros import conversions as conv
from da3_ros.ros.conversions.ranges import RANGE_TYPES, range_points


class RangeTopics:
    """The range topics of a rig: what arrived on each, and the ``RangeSet`` of a set."""

    def __init__(self, sources: Sequence[RangeSource], cfg: RangeFitConfig):
        self.sources = list(sources)
        self.cfg = cfg
        self.latest: LatestByStamp[Any] = LatestByStamp(len(self.sources))
        self.infos: list[CameraInfo | None] = [None] * len(self.sources)  # a depth image's camera_info

    def refuse_own_outputs(self, resolve: Callable[[str], str], outputs: set[str]) -> None:
        """ConfigError for a range topic that is one of the node's own outputs (resolved, remappings applied).

        The node publishes ``scan`` (navigation), clouds and depth: fitting its own output would scale DA3's
        depth by itself (a scale of 1 that looks like metres). ``resolve``: the node's ``resolve_topic_name``.
        """
        for source in self.sources:
            topic = resolve(source.topic)
            if topic in outputs:
                raise ConfigError(f"metric.range_topics: {topic} is this node's own output, so its depth would scale "
                                  "itself; run the node in a namespace (-r __ns:=/da3: its outputs move under it, an "
                                  "absolute range topic stays) or name the range sensor's own topic")

    def subscribe(self, create_subscription: Callable[..., Any], qos: Any) -> list[Any]:
        """Subscribe every topic (and a depth image's camera_info) through the node's ``create_subscription``."""
        subs = []
        for i, source in enumerate(self.sources):
            subs.append(create_subscription(RANGE_TYPES[source.kind], source.topic,
                                            lambda m, i=i: self.add(i, m), qos))
            if source.kind is RangeKind.DEPTH:
                subs.append(create_subscription(CameraInfo, source.info_topic,
                                                lambda m, i=i: self.add_info(i, m), qos))
        return subs

    def add(self, i: int, msg: Any) -> None:
        """A message of topic ``i`` (the callbacks' thread, or the bag's reader)."""
        self.latest.add(i, conv.stamp_to_ns(msg.header.stamp), msg)

    def add_info(self, i: int, msg: CameraInfo) -> None:
        """The camera_info of depth-image topic ``i``."""
        self.infos[i] = msg

    def for_set(self, stamp_ns: int) -> RangeSet:
        """The returns of each topic's message nearest ``stamp_ns`` within the slop (a problem when none is)."""
        chosen, offset_s, problem = self.latest.pick(stamp_ns, int(self.cfg.slop_s * 1e9))
        readings = []
        for i, msg in chosen:
            try:
                readings.append(RangeReading(range_points(self.sources[i].kind, msg, self.infos[i]),
                                             msg.header.frame_id, conv.stamp_to_ns(msg.header.stamp)))
            except conv.ConversionError as exc:
                problem = f"{self.sources[i].topic}: {exc}"
        if problem and not readings:
            return RangeSet([], self.cfg, offset_s, problem)
        return RangeSet(readings, self.cfg, offset_s)
