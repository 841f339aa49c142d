"""Output bags byte for byte (issue 23 item 18): CDR alignment padding is zero, the same input gives the same bytes.

The oracle is an independent CDR encoder (mcap-ros2-support's, which writes zero padding) fed with the message as
its own decoder reads it back from the bytes: equal bytes (up to rmw's zeroed tail) mean every value byte is the
same and every padding byte is zero.
"""
from __future__ import annotations

import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from mcap.reader import make_reader
from mcap.records import Schema
from mcap_ros2._dynamic import serialize_dynamic
from mcap_ros2.decoder import DecoderFactory
from nav_msgs.msg import Odometry
from rclpy.serialization import deserialize_message
from rclpy.serialization import serialize_message as rclpy_serialize
from sensor_msgs.msg import CameraInfo, Image, JointState, LaserScan, PointCloud2, PointField
from std_msgs.msg import Header, UInt8MultiArray
from tf2_msgs.msg import TFMessage

from conftest import EXAMPLES
from da3_ros.msg import DepthView, MultiViewDepth
from da3_ros.offline.bag import BagOptions, run_bag
from da3_ros.offline.example_bag import CAMERAS, write_example_bag
from da3_ros.offline.mcap_io import message_definition
from da3_ros.offline.setup import ros_type_name
from da3_ros.ros.cdr_padding import CdrLayoutError, serialize_message, zero_padding


def _oracle(type_name: str, data: bytes) -> bytes:
    """``data`` decoded and encoded again by mcap-ros2-support (zero padding), padded with zeros to its length."""
    text = message_definition(type_name)
    encoded = serialize_dynamic(type_name, text)[type_name](_decode(type_name, text, data))
    assert len(encoded) <= len(data)
    return encoded + bytes(len(data) - len(encoded))


def _decode(type_name: str, text: str, data: bytes):
    schema = Schema(id=1, name=type_name, encoding="ros2msg", data=text.encode())
    return DecoderFactory().decoder_for("cdr", schema)(data)


def _messages() -> list:
    """Awkward layouts: odd-length strings before 4- and 8-byte fields, empty and filled sequences."""
    h = Header(frame_id="cam")
    info = CameraInfo(header=h, height=7, width=9, distortion_model="plumb_bob", d=[0.1, 0.0, 0.0, 0.0, 0.0])
    cloud = PointCloud2(header=Header(frame_id="ab"), height=1, width=2, point_step=12, row_step=24,
                        fields=[PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")],
                        data=np.arange(24, dtype=np.uint8).tobytes(), is_dense=True)
    tf = TFMessage(transforms=[TransformStamped(header=Header(frame_id="a"), child_frame_id="a_da3")])
    view = DepthView(camera_name="l", depth=Image(header=h, height=1, width=1, encoding="32FC1", step=4,
                                                   data=b"\x01\x02\x03\x04"), camera_info=info)
    return [Image(header=h, height=1, width=3, encoding="mono8", step=3, data=b"\x07\x08\x09"), info, CameraInfo(),
            cloud, tf, Odometry(header=h, child_frame_id="c"), LaserScan(header=h, ranges=[1.0, 2.0]),
            JointState(), MultiViewDepth(header=h, model="m", scale_source="none", views=[view, DepthView()])]


@pytest.mark.parametrize("msg", _messages(), ids=lambda m: type(m).__name__)
def test_padding_is_zero_and_every_value_byte_is_rclpys(msg):
    rclpy_serialize(UInt8MultiArray(data=b"\xff" * 300))  # leave non-zero memory behind for the next buffer
    data = serialize_message(msg)
    assert data == _oracle(ros_type_name(type(msg)), data)
    assert len(data) == len(rclpy_serialize(msg))
    assert deserialize_message(data, type(msg)) == msg  # rclpy reads the same message back
    assert serialize_message(deserialize_message(data, type(msg))) == data


def test_a_walk_past_the_end_is_refused():
    data = serialize_message(Header(frame_id="abc"))
    with pytest.raises(CdrLayoutError, match="past the end"):
        zero_padding(CameraInfo, data)


def _bag_messages(path) -> list[tuple[str, str, int, bytes]]:
    with open(path, "rb") as f:
        return [(c.topic, s.name, m.log_time, bytes(m.data)) for s, c, m in make_reader(f).iter_messages()]


def test_two_bag_runs_write_the_same_bytes_with_zero_padding(tmp_path):
    """Two runs of `da3-ros bag`'s function on one tiny rig bag: the same messages, byte for byte."""
    bag = tmp_path / "rig.mcap"
    write_example_bag(bag, EXAMPLES, 1, scale=0.25, front_offset_ns=3_000_000)
    values = {"model": "random:da3-small@0", "backend": "torch", "process_res": 56, "camera_names": CAMERAS,
              "reference_camera": "left", "cameras": {"right": {"image_topic": "right/image_raw"}}}
    runs = []
    for name in ("a.mcap", "b.mcap"):
        run_bag(bag, tmp_path / name, values, BagOptions(progress=False))
        runs.append(_bag_messages(tmp_path / name))
    first, second = runs
    assert len(first) > 10 and {m[1] for m in first} >= {"sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo",
                                                              "sensor_msgs/msg/PointCloud2", "tf2_msgs/msg/TFMessage"}
    assert first == second
    for topic, type_name, _, data in first:
        assert data == _oracle(type_name, data), topic
