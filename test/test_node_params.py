"""Parameters done the ROS way, over real DDS: descriptors, refused sets with a reason, runtime output settings."""
from __future__ import annotations

import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, SetParameters
from sensor_msgs.msg import PointCloud2

from conftest import EXAMPLES
from da3_ros.ros import conversions as conv
from da3_ros.core.params import NODE_PARAMS, check_values, fused_frame_problem
from ros_harness import process, write_params


def _call(checker, client, request, what: str):
    assert client.wait_for_service(timeout_sec=60), f"{what}: no service"
    future = client.call_async(request)
    checker.spin_until(future.done, 30, what)
    return future.result()


def _value(v) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)


def _set(checker, client, name: str, value):
    request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=_value(value))])
    (result,) = _call(checker, client, request, f"set {name}").results
    return result


def test_the_table_checks_values():
    assert check_values({"cloud.stride": 2, "tf.mode": "off", "sync.slop_s": 0.02, "process_res": 504}) == []
    problems = check_values({"cloud.stride": 0, "tf.mode": "sideways", "sync.slop_s": -0.1, "process_res": 500})
    assert problems == ["cloud.stride = 0 is not allowed: in [1, 64]",
                        "tf.mode = 'sideways' is not allowed: one of: estimated_children, camera_frames, off",
                        "sync.slop_s = -0.1 is not allowed: in [0.0, 10.0]",
                        "process_res = 500 is not allowed: in [14, 4998] in steps of 14 from 14"]
    assert all(p.problem(p.default) == "" for p in NODE_PARAMS)  # every default is allowed
    assert fused_frame_problem("", ["a", "b"], "_da3") == fused_frame_problem("b_da3", ["a", "b"], "_da3") == ""
    assert "one of ['a', 'a_da3', 'b', 'b_da3']" in fused_frame_problem("c", ["a", "b"], "_da3")


def test_invalid_start_up_values_name_the_parameter(tmp_path, domain_id):
    for params, says in [({"cloud.stride": 0}, "cloud.stride"), ({"tf.mode": "sideways"}, "tf.mode = 'sideways'"),
                         ({"sync.slop_s": -0.5}, "sync.slop_s"),
                         ({"fused_frame": "nowhere", "cameras": {"cam": {"frame_id": "cam_optical"}}},
                          "fused_frame = 'nowhere'")]:
        node_yaml = write_params(tmp_path / "node.yaml", "da3_depth",
                                 {"model": "random:da3-small@0", "camera_names": ["cam"], **params})
        log = tmp_path / "node.log"
        with process("depth_node", node_yaml, domain_id, log) as proc:
            assert proc.wait(timeout=60) == 1
        out = log.read_text()
        line = next((x for x in out.splitlines() if "cannot start" in x), "")
        assert says in line and "allowed" in line and "Traceback" not in out, out


def test_parameters_are_described_checked_and_applied(tmp_path, domain_id, checker):
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth",
                             {"model": "random:da3-small@0", "camera_names": ["front"], "cloud.stride": 2})
    player_yaml = write_params(tmp_path / "player.yaml", "rig_player",
                               {"camera_names": ["front"], "sources": [f"image:{EXAMPLES / 'SOH_000.png'}"],
                                "rate_hz": 2.0})
    describe = checker.node.create_client(DescribeParameters, "/da3_depth/describe_parameters")
    setter = checker.node.create_client(SetParameters, "/da3_depth/set_parameters")
    clouds = checker.collect(PointCloud2, "front/points")
    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"), \
            process("rig_player", player_yaml, domain_id, tmp_path / "player.log"):
        names = ["cloud.stride", "model", "tf.mode", "sync.slop_s", "cameras.front.image_topic"]
        d = {x.name: x for x in _call(checker, describe, DescribeParameters.Request(names=names),
                                       "describe").descriptors}
        assert "every n-th pixel" in d["cloud.stride"].description and not d["cloud.stride"].read_only
        (r,) = d["cloud.stride"].integer_range
        assert (r.from_value, r.to_value, r.step) == (1, 64, 0)
        assert d["model"].read_only and d["cameras.front.image_topic"].read_only
        assert "camera_frames" in d["tf.mode"].additional_constraints
        assert d["sync.slop_s"].floating_point_range[0].from_value == 0.0
        # refused, with a reason: out of range, not a choice, read-only (needs a restart)
        for name, value, reason in [("cloud.stride", 0, "cloud.stride"), ("tf.mode", "sideways", "one of"),
                                    ("sync.slop_s", -0.1, ""), ("model", "random:da3-base", "")]:
            result = _set(checker, setter, name, value)
            assert not result.successful and reason in result.reason and result.reason, (name, result.reason)
        # applied to the next sets: a coarser stride, fewer points
        checker.spin_until(lambda: len(clouds) >= 1, 120, "a cloud at stride 2")
        fine = conv.pointcloud2_to_xyz_rgb(clouds[-1])[0]
        assert _set(checker, setter, "cloud.stride", 8).successful
        n = len(clouds)
        checker.spin_until(lambda: len(clouds) >= n + 2, 60, "clouds after the set")
        coarse = conv.pointcloud2_to_xyz_rgb(clouds[-1])[0]
    assert len(coarse) == pytest.approx(len(fine) / 16, rel=0.1)


def test_a_bad_fused_frame_spares_the_other_outputs(tmp_path, domain_id, checker):
    """A fused_frame that no image header names (unknown before the first set): points_fused only is refused.

    Counted and said; the result message still comes.
    """
    from da3_ros.msg import MultiViewDepth
    from diagnostic_msgs.msg import DiagnosticArray

    from ros_harness import diag_values

    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth",
                             {"model": "random:da3-small@0", "camera_names": ["front"], "fused_frame": "nowhere",
                              "diagnostics_period_s": 0.3})
    player_yaml = write_params(tmp_path / "player.yaml", "rig_player",
                               {"camera_names": ["front"], "sources": [f"image:{EXAMPLES / 'SOH_000.png'}"],
                                "rate_hz": 2.0})
    fused = checker.collect(PointCloud2, "points_fused")
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"), \
            process("rig_player", player_yaml, domain_id, tmp_path / "player.log"):
        checker.spin_until(lambda: len(mv) >= 2, 120, "two result messages")
        checker.spin_until(lambda: diags and diag_values(diags[-1]).get("errors", 0) >= 1, 10, "errors counted")
    assert not fused
    assert "fused_frame 'nowhere' is not a camera frame" in (tmp_path / "node.log").read_text()


OFF_YAML = """\
da3_depth:
  ros__parameters:
    model: random:da3-small@0
    camera_names: [front]
    pose_conditioning: off
    diagnostics_period_s: 0.3
    tf:
      mode: off
"""  # unquoted: YAML (and so ROS, and -p name:=off) reads `off` as the boolean false


def test_off_typed_unquoted_means_off_in_the_table_and_the_offline_parser(tmp_path):
    """`pose_conditioning: off` and `tf.mode: off` are documented values; YAML hands them over as false."""
    from da3_ros.core.param_file import check_params, parse_override, read_params_file
    from da3_ros.core.params import normalized

    assert check_values({"tf.mode": False, "pose_conditioning": False}) == []
    assert normalized("tf.mode", False) == "off" == normalized("pose_conditioning", False)
    assert normalized("tf.mode", "camera_frames") == "camera_frames" and normalized("cloud.drop_sky", False) is False
    (path := tmp_path / "off.yaml").write_text(OFF_YAML)
    values, _ = check_params(read_params_file(path))
    assert values["tf.mode"] == "off" and values["pose_conditioning"] == "off"
    values, _ = check_params(dict([parse_override("tf.mode:=off"), parse_override("pose_conditioning:=off")]))
    assert values == {"tf.mode": "off", "pose_conditioning": "off"}
    for name in ("tf.mode", "pose_conditioning"):  # true has no meaning: the error says what to write
        (problem,) = check_values({name: True})
        assert f"{name} = True is not allowed" in problem and "quote" in problem and "'off'" in problem
        with pytest.raises(ValueError, match=f"{name}.*quote"):
            check_params({name: True})


def test_a_node_takes_off_unquoted_from_yaml_and_from_p(tmp_path, domain_id, checker):
    """A real node started with `pose_conditioning: off` and `tf.mode: off` in YAML starts and applies off."""
    from da3_ros.msg import MultiViewDepth
    from tf2_msgs.msg import TFMessage

    (node_yaml := tmp_path / "node.yaml").write_text(OFF_YAML)
    player_yaml = write_params(tmp_path / "player.yaml", "rig_player",
                               {"camera_names": ["front"], "sources": [f"image:{EXAMPLES / 'SOH_000.png'}"],
                                "rate_hz": 2.0})
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    tf = checker.collect(TFMessage, "/tf", 100)
    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"), \
            process("rig_player", player_yaml, domain_id, tmp_path / "player.log"):
        checker.spin_until(lambda: len(mv) >= 2, 120, "two result messages")
    assert mv[-1].views[0].has_pose and not tf  # poses estimated, none published on /tf: tf.mode off
    assert "pose conditioning: off" in (tmp_path / "node.log").read_text()
    # the same from the command line: -p tf.mode:=off pose_conditioning:=off over a file that says otherwise
    on_yaml = write_params(tmp_path / "on.yaml", "da3_depth", {"model": "random:da3-small@0",
                                                               "camera_names": ["front"], "tf.mode": "camera_frames"})
    log = tmp_path / "p.log"
    setter = checker.node.create_client(SetParameters, "/da3_depth/set_parameters")
    with process("depth_node", on_yaml, domain_id, log, ["-p", "tf.mode:=off", "-p", "pose_conditioning:=off"]):
        assert _set(checker, setter, "tf.mode", False).successful  # `ros2 param set ... tf.mode off` too
        refused = _set(checker, setter, "tf.mode", True)
    assert not refused.successful and "quote" in refused.reason, refused.reason
    assert "pose conditioning: off" in log.read_text() and "cannot start" not in log.read_text()


def test_true_for_an_off_choice_names_the_fix(tmp_path, domain_id):
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", {"model": "random:da3-small@0",
                                                                   "camera_names": ["cam"]})
    log = tmp_path / "node.log"
    with process("depth_node", node_yaml, domain_id, log, ["-p", "tf.mode:=on"]) as proc:
        assert proc.wait(timeout=60) == 1
    line = next((x for x in log.read_text().splitlines() if "cannot start" in x), "")
    assert "tf.mode = True is not allowed" in line and "quote" in line and "Traceback" not in log.read_text(), line
