"""The range topics' bookkeeping without DDS (issue 27): which message a set takes, and what it says when none fits.

Real message classes in, ``RangeSet`` out: the picking by stamp within ``metric.range_slop_s``, each reading's
frame and stamp, a message that cannot be read (a depth image without its camera_info), and the refusal of a
range topic that is the node's own output.
"""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, LaserScan
from std_msgs.msg import Header

from da3_ros.core.errors import ConfigError
from da3_ros.core.range_scale import RangeFitConfig, parse_range_topics
from da3_ros.ros import conversions as conv
from da3_ros.ros.range_inputs import RangeTopics

MS = 1_000_000


def _header(stamp_ns: int, frame: str) -> Header:
    return Header(stamp=conv.ns_to_stamp(stamp_ns), frame_id=frame)


def test_each_topic_gives_the_set_its_message_nearest_in_time():
    topics = RangeTopics(parse_range_topics(["cloud:/lidar", "scan:/laser"]), RangeFitConfig(slop_s=0.05))
    for k, frame in enumerate(("lidar_a", "lidar_b", "lidar_c")):
        points = np.full((3, 3), float(k + 1), np.float32)
        topics.add(0, conv.xyz_rgb_to_pointcloud2(points, _header(1000 * MS + 40 * MS * k, frame)))
    topics.add(1, LaserScan(header=_header(900 * MS, "laser"), angle_min=0.0, angle_increment=0.1, range_min=0.1,
                            range_max=10.0, ranges=[1.0, 2.0]))
    ranges = topics.for_set(1050 * MS)  # lidar_b is 10 ms away; the scan 150 ms: out of the slop, not used
    assert [(r.frame, r.stamp_ns) for r in ranges.readings] == [("lidar_b", 1040 * MS)]
    np.testing.assert_array_equal(ranges.readings[0].points, np.full((3, 3), 2.0))
    assert ranges.offset_s == pytest.approx(0.010) and ranges.problem == ""
    late = topics.for_set(5000 * MS)
    assert late.readings == [] and "metric.range_slop_s 0.05 s" in late.problem and topics.latest.stale == 1


def test_an_unreadable_range_message_is_the_set_s_reason():
    topics = RangeTopics(parse_range_topics(["depth:/tof/depth/image_rect"]), RangeFitConfig())
    image = conv.depth_to_image(np.ones((2, 3), np.float32), _header(1000 * MS, "tof"))
    topics.add(0, image)
    ranges = topics.for_set(1000 * MS)
    assert ranges.readings == [] and "/tof/depth/image_rect" in ranges.problem and "camera_info" in ranges.problem
    topics.add_info(0, CameraInfo(height=2, width=3, k=[10.0, 0, 1.0, 0, 10.0, 0.5, 0, 0, 1]))
    ranges = topics.for_set(1000 * MS)
    assert ranges.problem == "" and len(ranges.readings[0].points) == 6 and ranges.readings[0].frame == "tof"


def test_a_range_topic_that_resolves_to_an_own_output_is_refused():
    topics = RangeTopics(parse_range_topics(["scan:scan", "cloud:/lidar"]), RangeFitConfig())
    own = {"/scan", "/points_fused"}
    with pytest.raises(ConfigError, match="/scan is this node's own output.*namespace"):
        topics.refuse_own_outputs(lambda name: "/" + name.lstrip("/"), own)
    topics.refuse_own_outputs(lambda name: "/da3/" + name if not name.startswith("/") else name, own)  # namespaced
