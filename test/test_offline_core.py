"""The offline commands' ROS-free pieces: parameter files as the node reads them, schemas, PLY."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from mcap_ros2._dynamic import generate_dynamic, serialize_dynamic
from plyfile import PlyData

from da3_ros.offline.mcap_io import MSG_DELIMITER, field_types, message_definition
from da3_ros.core.param_file import ParamFileError, check_params, parse_override, read_params_file
from da3_ros.core.params import NODE_PARAMS
from da3_ros.offline.ply import write_ply


def test_params_file_sections_nesting_and_types(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"model": "a", "sync": {"slop_s": 1}, "cloud": {"stride": 3}}},
        "da3_depth": {"ros__parameters": {"model": "b", "camera_names": ["l", "r"],
                                          "cameras": {"r": {"T_ref_cam": [1, 0, 0, 0, 0, 0, 1]}}, "typo": 1}}}))
    values, unknown = check_params(read_params_file(path))
    assert values["model"] == "b"  # the node's own section wins over /**
    assert values["sync.slop_s"] == 1.0 and isinstance(values["sync.slop_s"], float)  # an int for a double
    assert values["cloud.stride"] == 3 and values["cameras.r.T_ref_cam"] == [1.0, 0, 0, 0, 0, 0, 1.0]
    assert unknown == ["typo"]
    with pytest.raises(ParamFileError, match="'cloud.stride' = 'two'.*int"):
        check_params({"cloud.stride": "two"})
    assert parse_override("backend:=torch") == ("backend", "torch")
    assert parse_override("camera_names:=[a, b]") == ("camera_names", ["a", "b"])
    with pytest.raises(ParamFileError, match="name:=value"):
        parse_override("backend=torch")


def test_params_file_errors_name_the_fix(tmp_path):
    other = tmp_path / "o.yaml"
    other.write_text(yaml.safe_dump({"rig_player": {"ros__parameters": {"rate_hz": 1.0}}}))
    with pytest.raises(ParamFileError, match="'rig_player'.*'/\\*\\*:' or 'da3_depth:'"):
        read_params_file(other)
    with pytest.raises(ParamFileError, match="cannot read"):
        read_params_file(tmp_path / "missing.yaml")


def test_every_node_default_passes_its_own_check():
    values, unknown = check_params({p.name: p.default for p in NODE_PARAMS})
    assert not unknown and values == {p.name: p.default for p in NODE_PARAMS}


def test_message_definition_is_complete_and_decodes():
    """MultiViewDepth's schema: ours + every dependency once, rosbag2's delimiter; a third-party codec round-trips."""
    text = message_definition("da3_ros/msg/MultiViewDepth")
    deps = [line[5:] for line in text.splitlines() if line.startswith("MSG: ")]
    assert len(deps) == len(set(deps))
    assert {"da3_ros/msg/DepthView", "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo",
            "sensor_msgs/msg/RegionOfInterest", "geometry_msgs/msg/Pose", "std_msgs/msg/Header",
            "builtin_interfaces/msg/Time"} <= set(deps)
    assert text.count(MSG_DELIMITER + "\nMSG: ") == len(deps)
    from rclpy.serialization import serialize_message

    from da3_ros.msg import DepthView, MultiViewDepth

    msg = MultiViewDepth(model="m", is_metric=True, reference_camera="a",
                         views=[DepthView(camera_name="a", depth_scale=2.5, has_pose=True)])
    msg.views[0].depth.encoding = "32FC1"
    msg.views[0].camera_info.k = [float(i) for i in range(9)]
    decoded = generate_dynamic("da3_ros/msg/MultiViewDepth", text)["da3_ros/msg/MultiViewDepth"](
        serialize_message(msg))
    v = decoded.views[0]
    assert decoded.model == "m" and decoded.is_metric and v.camera_name == "a" and v.depth_scale == 2.5
    assert v.depth.encoding == "32FC1" and list(v.camera_info.k) == [float(i) for i in range(9)] and v.has_pose
    # and back: encoded by the third-party codec from the same schema, rclpy reads the same message
    # (bytes may differ only in CDR padding, which Fast CDR leaves unset)
    from rclpy.serialization import deserialize_message

    again = serialize_dynamic("da3_ros/msg/MultiViewDepth", text)["da3_ros/msg/MultiViewDepth"](decoded)
    assert deserialize_message(again, MultiViewDepth) == msg


def test_field_types_skip_constants_and_resolve_packages():
    text = "uint8 INT8 = 1\nstring<=5 s\nPointField[] fields  # same package\nstd_msgs/Header header\nint32[3] a\n"
    assert field_types(text, "sensor_msgs") == ["sensor_msgs/msg/PointField", "std_msgs/msg/Header"]


def test_ply_reads_back_with_plyfile(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(500, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(500, 3), dtype=np.uint8)
    write_ply(tmp_path / "c.ply", xyz, rgb, comment="test")
    ply = PlyData.read(str(tmp_path / "c.ply"))
    v = ply["vertex"]
    assert ply.text is False and ply.byte_order == "<" and v.count == 500
    assert [p.name for p in v.properties] == ["x", "y", "z", "red", "green", "blue"]
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), xyz)
    np.testing.assert_array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), rgb)
    with pytest.raises(ValueError, match="colours must be"):
        write_ply(tmp_path / "d.ply", xyz, rgb[:10])
