"""Issue 23: what the temporal window emits where it meets the other capabilities (pure: no network, no DDS).

Item 6: odometry from a chain that is not in metres is withheld (``odom_not_metric``, counted, /diagnostics
WARN) unless ``temporal.publish_relative_odometry`` opts in.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from temporal_scene import drive, trajectory

from da3_ros.core.config import OutputConfig, output_config
from da3_ros.core.geometry import relative_poses
from da3_ros.core.params import param_table
from da3_ros.core.results import SetResult
from da3_ros.core.rig import RigResult
from da3_ros.core.sync import SyncStats
from da3_ros.core.temporal.keyframes import KeyframeRule
from da3_ros.core.temporal.tracker import TemporalConfig
from da3_ros.ros import emit
from da3_ros.ros.diagnostics import NodeStats


def _set_result(metric: bool, cfg: OutputConfig | None = None) -> SetResult:
    """The last set of a chain over the analytic scene, as the processor hands it to the emitter."""
    run = drive(TemporalConfig(KeyframeRule(max_keyframes=2)), trajectory(4), metric=metric)
    step = run.steps[-1]
    assert step.chain.is_metric is metric and step.current.is_metric is metric
    assert step.current.T_cam_world is not None
    result = RigResult(step.current, 0, relative_poses(step.current.T_cam_world, 0), False, step,
                       step.layout.n_views)
    return SetResult(result, ["front"], ["front_optical_frame"], [step.chain.stamp_ns], cfg or OutputConfig())


def _emitted(out: SetResult) -> tuple[list[emit.Message], list[emit.Withheld]]:
    items = list(emit.set_messages(out, ["depth"], lambda topic: True))
    return ([i for i in items if isinstance(i, emit.Message)], [i for i in items if isinstance(i, emit.Withheld)])


def test_odometry_from_a_relative_chain_is_withheld_counted_and_warned():
    messages, withheld = _emitted(_set_result(metric=False))
    assert emit.ODOMETRY not in [m.topic for m in messages]
    assert [(w.topic, w.counter) for w in withheld] == [(emit.ODOMETRY, "odom_not_metric")]
    assert "temporal.publish_relative_odometry" in withheld[0].text
    # the chain's TF (an estimated frame, like estimated_children from relative depth) still goes out
    tf = [m for m in messages if m.topic == emit.TF]
    assert tf and "odom_da3" in [t.header.frame_id for t in tf[0].msg.transforms]
    stats = NodeStats(["front"])
    for counter in emit.reasons(withheld):  # as the node and the bag count them: once per set and reason
        stats.count(counter)
    status = stats.diagnostics("da3_depth", SyncStats(frames_in=[1])).status[0]
    assert status.level == DiagnosticStatus.WARN and "odometry withheld" in status.message
    assert {kv.key: kv.value for kv in status.values}["odom_not_metric"] == "1"
    # the next message without a new withheld set is OK again (what is wrong now, not once)
    assert stats.diagnostics("da3_depth", SyncStats(frames_in=[1])).status[0].level == DiagnosticStatus.OK


def test_relative_odometry_is_published_only_with_the_opt_in():
    cfg = output_config(lambda name: {"temporal.publish_relative_odometry": True}.get(
        name, param_table()[name].default))  # the parameter as the node and the offline commands read it
    assert cfg.odom_relative
    messages, withheld = _emitted(_set_result(metric=False, cfg=cfg))
    odom = [m.msg for m in messages if m.topic == emit.ODOMETRY]
    assert len(odom) == 1 and not withheld
    assert np.isfinite(odom[0].pose.pose.position.z)
    assert param_table()["temporal.publish_relative_odometry"].default is False


def test_odometry_from_a_metric_chain_is_published_without_the_opt_in():
    out = _set_result(metric=True)
    assert not out.cfg.odom_relative
    messages, withheld = _emitted(out)
    assert [m.topic for m in messages].count(emit.ODOMETRY) == 1 and not withheld
    relative = _set_result(metric=False, cfg=dataclasses.replace(OutputConfig(), odom_relative=True))
    assert relative.odometry_withheld() is None


def test_a_temporal_window_on_triton_is_refused_at_start_up_with_the_fix():
    """Issue 23 item 5: a window sends N .. N + K views; a Triton server answers only the counts it was started with.

    Decided: refused at start-up (the node cannot check the server's view counts; a refused set never adds a
    keyframe, so every set after the first failed). The same values on a local backend, or K = 0, start.
    """
    import pytest

    from da3_ros.core.config import DepthConfig
    from da3_ros.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"temporal.keyframes = 2 with backend triton.*local backend.*"
                                          r"temporal.keyframes 0"):
        DepthConfig.from_values({"backend": "triton", "temporal.keyframes": 2})
    assert DepthConfig.from_values({"backend": "triton", "temporal.keyframes": 0}).temporal is None
    assert DepthConfig.from_values({"backend": "onnxruntime", "temporal.keyframes": 2}).temporal is not None
