"""Where two features meet, through the core without DDS (issue 15).

A silent reference camera and TF, runtime output settings and silent cameras, one camera without
calibration, a lone camera and pose conditioning, and what the node and the bag emit for the same set.
"""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from std_msgs.msg import Header
from sensor_msgs.msg import CameraInfo

from da3_ros.ros import conversions as conv
from da3_ros.ros import emit
from da3_ros.core import preprocess
from da3_ros.engines import FrameBatch, create_engine
from da3_ros.core.config import OutputConfig
from da3_ros.core.config import CoreConfig
from da3_ros.core.processor import Processed
from da3_ros.ros.messages import SetMessages
from da3_ros.ros.pipeline import SetProcessor
from da3_ros.core.rig import Rig
from da3_ros.core.static_tf import StaticTfBuffer

CAMERAS = ("left", "right", "front")


@pytest.fixture(scope="module")
def engine():
    return create_engine("torch", "random:da3-small@0", process_res=140)


@pytest.fixture(scope="module")
def rgbs(soh_images):
    """Three cameras' images: the two photos and a crop of the first (different content per camera)."""
    return [soh_images[0], soh_images[1], np.ascontiguousarray(soh_images[0][::-1])]


def _core(engine, cameras=CAMERAS, out_cfg: OutputConfig | None = None, conditioning="auto") -> SetProcessor:
    cfg = CoreConfig(list(cameras), [""] * len(cameras), conditioning, out_cfg or OutputConfig(), None, [])
    return SetProcessor(Rig(engine), cfg, StaticTfBuffer())


def _image(rgb, t_s: float, frame: str):
    return conv.rgb_to_image(rgb, Header(stamp=conv.ns_to_stamp(int(t_s * 1e9)), frame_id=frame))


def _set(rgbs, t_s: float, present, cameras=CAMERAS):
    return [_image(rgbs[i], t_s, f"{c}_optical_frame") if i in present else None for i, c in enumerate(cameras)]


def _info(rgb, f: float = 500.0) -> CameraInfo:
    h, w = rgb.shape[:2]
    return CameraInfo(height=h, width=w, k=[f, 0.0, w / 2, 0.0, f, h / 2, 0.0, 0.0, 1.0])


def _run(core, rgbs, t_s, present, infos=None) -> Processed:
    n = len(core.cfg.camera_names)
    done = core.process(_set(rgbs, t_s, present, core.cfg.camera_names), infos or [None] * n, [False] * n)
    assert isinstance(done, Processed), done
    return done


def test_a_silent_reference_camera_never_reparents_tf_nor_moves_the_fused_cloud(engine, rgbs):
    """Item 2: the reference frame is pinned, whichever cameras a set has.

    Random presence patterns: every TF child has ONE parent, the reference camera's frame; a set without the
    reference publishes no TF and no points_fused (said why), and no pose in multiview_depth.
    """
    core = _core(engine)
    rng = random.Random(7)
    parents: dict[str, set[str]] = {}
    patterns = [(0, 1, 2), (1, 2), (0, 2), (1,), (0,), (2,)] + [tuple(sorted(rng.sample(range(3), rng.randint(1, 3))))
                                                                for _ in range(6)]
    for k, present in enumerate(patterns):
        out = _run(core, rgbs, 0.1 * k, present).outputs
        items = list(emit.set_messages(out, ["depth", "points"], lambda topic: True))
        tf = [m.msg for m in items if isinstance(m, emit.Message) and m.topic == emit.TF]
        withheld = {(w.topic, w.counter) for w in items if isinstance(w, emit.Withheld)}
        fused = [m for m in items if isinstance(m, emit.Message) and m.topic == emit.FUSED]
        mv = SetMessages(out).multiview()
        assert mv.reference_camera == "left"
        if 0 in present:
            assert withheld == set() and len(fused) == 1 and fused[0].msg.header.frame_id == "left_optical_frame"
            assert all(v.has_pose for v in mv.views)
        else:
            assert tf == [] and fused == [] and not any(v.has_pose for v in mv.views)
            assert withheld == {(emit.TF, "reference_silent"), (emit.FUSED, "reference_silent")}
        for msg in tf:
            for t in msg.transforms:
                parents.setdefault(t.child_frame_id, set()).add(t.header.frame_id)
        depth_topics = {m.topic for m in items if isinstance(m, emit.Message) and m.topic.endswith("depth/image")}
        assert depth_topics == {f"{CAMERAS[i]}/depth/image" for i in present}  # each camera's own topic
    assert parents and all(p == {"left_optical_frame"} for p in parents.values()), parents


def test_runtime_output_settings_reach_the_sets_of_a_silent_camera(engine, rgbs):
    """Item 3: ``ros2 param set cloud.stride`` / ``tf.mode`` (the node replaces core.cfg) apply to subsets too."""
    core = _core(engine, out_cfg=OutputConfig(stride=2))
    before = _run(core, rgbs, 0.0, (0, 1)).outputs  # builds the (left, right) subset with the old config
    n_before = len(before.cloud_arrays(0)[0])
    core.cfg = dataclasses.replace(core.cfg, out_cfg=OutputConfig(stride=4, tf_mode="off"))
    after = _run(core, rgbs, 0.1, (0, 1)).outputs
    assert after.cfg.stride == 4 and len(after.cloud_arrays(0)[0]) < n_before / 3
    assert after.transforms() == []


def test_one_camera_without_camera_info_keeps_the_others_calibration(engine, rgbs):
    """Item 7: camera 0 has camera_info, camera 1 none: camera 0 keeps ITS K, camera 1 gets the model's."""
    core = _core(engine, cameras=("left", "right"))
    info = _info(rgbs[0], f=700.0)
    out = _run(core, rgbs, 0.0, (0, 1), [info, None]).outputs
    plan = preprocess.plan_batch([rgbs[0].shape[:2]] * 2, engine.process_res, engine.process_res_method,
                                 engine.mixed_resolution)[0]
    K_left = preprocess.K_cam_to_proc(np.array(info.k).reshape(3, 3), plan)
    np.testing.assert_allclose(np.array(SetMessages(out).camera_info(0).k).reshape(3, 3), K_left, rtol=1e-9)
    model_K = _run(_core(engine, cameras=("left", "right")), rgbs, 0.0, (0, 1)).outputs.pred.K_proc
    np.testing.assert_allclose(np.array(SetMessages(out).camera_info(1).k).reshape(3, 3), model_K[1], rtol=1e-5)
    assert out.pred.K_source == "camera+model" and not out.result.conditioned
    assert out.cloud_arrays(0) is not None and out.cloud_arrays(1) is not None


def test_a_lone_camera_with_camera_info_is_not_pose_conditioned(engine, rgbs):
    """Item 8: node (auto) and ``da3-ros infer`` agree on one image and its K: no conditioning for one view."""
    core = _core(engine, cameras=("left",))
    info = _info(rgbs[0])
    out = _run(core, rgbs, 0.0, (0,), [info]).outputs
    assert not out.result.conditioned
    K = np.array(info.k).reshape(1, 3, 3)
    direct = engine.infer(FrameBatch([rgbs[0]], K_cam=K))  # what the CLI runs
    np.testing.assert_array_equal(out.pred.depth, direct.depth)


def test_a_silent_camera_of_a_calibrated_rig_is_not_conditioned_on_one_view(engine, rgbs):
    """Item 22's cause: the 1-view subset of a pose-conditioned rig runs unconditioned (and is relative)."""
    eye = np.eye(4)
    right = np.eye(4)
    right[0, 3] = 0.12
    rig = Rig(engine, 0, np.stack([eye, right]))
    cfg = CoreConfig(["left", "right"], ["", ""], "params", OutputConfig(), None, [])
    core = SetProcessor(rig, cfg, StaticTfBuffer())
    infos = [_info(rgbs[0]), _info(rgbs[1])]
    both = core.process(_set(rgbs, 0.0, (0, 1), ("left", "right")), infos, [False, False])
    assert both.outputs.result.conditioned and both.outputs.pred.is_metric
    alone = core.process(_set(rgbs, 0.1, (1,), ("left", "right")), infos, [False, False])
    assert isinstance(alone, Processed) and not alone.outputs.result.conditioned
    assert not alone.outputs.pred.is_metric and alone.outputs.nav_withheld()[0] == "nav_not_metric"


def test_a_bad_fused_frame_costs_only_the_fused_cloud_in_node_and_bag(engine, rgbs):
    """Item 14: one place decides what a set emits; a fused_frame naming no camera frame withholds only it."""
    core = _core(engine, cameras=("left", "right"), out_cfg=OutputConfig(fused_frame="nowhere"))
    out = _run(core, rgbs, 0.0, (0, 1)).outputs
    items = list(emit.set_messages(out, ["depth", "points"], lambda topic: True))
    notes = [w for w in items if isinstance(w, emit.Withheld)]
    topics = {m.topic for m in items if isinstance(m, emit.Message)}
    assert [(w.topic, w.counter) for w in notes] == [(emit.FUSED, "errors")] and "nowhere" in notes[0].text
    assert {"left/depth/image", "right/points", emit.MULTIVIEW, emit.TF} <= topics and emit.FUSED not in topics
    assert list(emit.reasons(notes)) == ["errors"]  # counted once
