"""tf.suffix (issue 23 item 10): no estimated frame may be a camera frame; a runtime suffix never renames the chain.

Pure: the config, the runtime parameter check the node runs on ``ros2 param set``, and the set's transforms.
"""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.parameter import Parameter

from da3_ros.core.config import DepthConfig
from da3_ros.core.errors import ConfigError
from da3_ros.core.params import check_values, tf_suffix_problem
from da3_ros.core.results import SetResult
from da3_ros.core.rig import RigResult
from da3_ros.ros.ros_params import ParameterWiring
from temporal_scene import drive, trajectory


def test_an_empty_suffix_is_refused_at_start_up_naming_the_fix():
    with pytest.raises(ConfigError, match=r"tf.suffix = '' is not allowed: .*cameras' own frames.*'_da3'"):
        DepthConfig.from_values({"tf.suffix": ""})
    assert check_values({"tf.suffix": "_da3"}) == [] and "tf.suffix = ''" in check_values({"tf.suffix": ""})[0]


def test_a_suffix_making_an_estimated_frame_a_camera_frame_is_refused_when_the_frames_are_known():
    values = {"camera_names": ["a", "b"], "cameras.a.frame_id": "cam", "cameras.b.frame_id": "cam_x"}
    with pytest.raises(ConfigError, match=r"tf.suffix = '_x' is not allowed: estimated frame\(s\) \['cam_x'\]"):
        DepthConfig.from_values({**values, "tf.suffix": "_x"})
    assert DepthConfig.from_values({**values, "tf.suffix": "_da3"}).out.tf_suffix == "_da3"
    assert tf_suffix_problem("_da3", ["cam", "cam_x"]) == ""


class _Wired(ParameterWiring):
    """The node's parameter wiring with its configuration, without a node (the check reads only the config)."""

    def __init__(self, config: DepthConfig):
        self.config = config


def test_ros2_param_set_of_an_empty_or_clashing_suffix_is_refused_with_the_reason():
    wired = _Wired(DepthConfig.from_values({"camera_names": ["a", "b"], "cameras.a.frame_id": "cam",
                                            "cameras.b.frame_id": "cam_x"}))
    empty = wired._check_set([Parameter("tf.suffix", Parameter.Type.STRING, "")])
    assert not empty.successful and "tf.suffix = ''" in empty.reason and "'_da3'" in empty.reason
    clash = wired._check_set([Parameter("tf.suffix", Parameter.Type.STRING, "_x")])
    assert not clash.successful and "['cam_x']" in clash.reason
    assert wired._check_set([Parameter("tf.suffix", Parameter.Type.STRING, "_est")]).successful


def _set(step, frames: list[str], cfg) -> SetResult:
    n = len(frames)
    result = RigResult(step.current, 0, np.tile(np.eye(4), (n, 1, 1)), False, temporal=step)
    return SetResult(result, frames, frames, [step.chain.stamp_ns] * n, cfg, "test")


def test_a_suffix_from_the_image_headers_that_clashes_withholds_the_tf():
    """Frames known only from the headers: the set's TF is withheld (counted), no camera frame gets a parent."""
    step = drive(DepthConfig.from_values({"temporal.keyframes": 2}).temporal, trajectory(1)).steps[0]
    cfg = DepthConfig.from_values({"tf.suffix": "_x", "temporal.keyframes": 2}).out
    out = _set(step, ["cam"], cfg)
    assert out.tf_withheld() is None and {t.child for t in out.transforms()} == {"cam_x"}
    clash = _set(step, ["cam", "cam_x"], cfg)
    reason, text = clash.tf_withheld()
    assert reason == "tf_second_parent" and "['cam_x']" in text
    assert not {t.child for t in clash.transforms()} & {"cam", "cam_x"}  # nor the odometry's child


def test_a_runtime_suffix_renames_the_estimated_frames_but_not_the_odometry_child():
    """Decided: the odometry's child frame is fixed at start-up; the change is said once in the log line."""
    start = DepthConfig.from_values({"temporal.keyframes": 2})
    changed = start.with_values({"tf.suffix": "_est"})
    step = drive(start.temporal, trajectory(1)).steps[0]
    out = _set(step, ["cam", "side"], changed.out)
    assert out.odometry().child == "cam_da3"  # the chain's child, as at start-up
    children = [t.child for t in out.transforms()]
    assert {"cam_est", "side_est", "cam_da3"} == set(children) and len(children) == len(set(children))
    assert changed.with_values({"cloud.stride": 4}).out.odom_child("cam") == "cam_da3"  # stays pinned
    line = start.odom_child_renamed({"tf.suffix": "_est"})
    assert "stays <reference frame>_da3" in line and "temporal.child_frame" in line
    assert start.odom_child_renamed({"tf.suffix": "_da3"}) == ""
    named = DepthConfig.from_values({"temporal.keyframes": 2, "temporal.child_frame": "rig_est"})
    assert named.odom_child_renamed({"tf.suffix": "_est"}) == ""  # a named child frame never depended on it
    assert DepthConfig.from_values({}).odom_child_renamed({"tf.suffix": "_est"}) == ""  # no chain, no child
