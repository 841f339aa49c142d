"""Metric scale in the node over real Fast DDS: the focal rule, no camera_info, hfov_deg, the pair."""
import math

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image

from conftest import EXAMPLES, read_rgb
from da3_ros.ros import conversions as conv
from da3_ros.core import preprocess
from da3_ros.engines import FrameBatch, create_engine
from da3_ros.core.geometry import pinhole_K
from da3_ros.msg import MultiViewDepth
from ros_harness import process, write_params

PHOTO = EXAMPLES / "SOH_000.png"
ONE_CAMERA = {"camera_names": ["front"], "sources": [f"image:{PHOTO}"], "rate_hz": 2.0}


def _run(tmp_path, domain_id, checker, node_params, player_params, until, what, timeout_s=150):
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", node_params)
    player_yaml = write_params(tmp_path / "player.yaml", "rig_player", player_params)
    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"), \
            process("rig_player", player_yaml, domain_id, tmp_path / "player.log"):
        checker.spin_until(until, timeout_s, what)
    return (tmp_path / "node.log").read_text()


def _values(diags) -> dict[str, str]:
    return {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}


def _relative_depth(process_res: int) -> np.ndarray:
    """da3metric-large's own output for the photo (no K: no focal rule applied), computed here."""
    engine = create_engine("torch", "random:da3metric-large@0", process_res=process_res)
    return engine.infer(FrameBatch([read_rgb(PHOTO)])).depth[0]


def test_metric_depth_is_the_network_output_times_focal_over_300(tmp_path, domain_id, checker):
    """Pixel for pixel: published depth = network output x (focal at network resolution) / 300."""
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    _run(tmp_path, domain_id, checker, {"model": "random:da3metric-large@0", "camera_names": ["front"],
                                        "process_res": 140, "backend": "torch"},
         ONE_CAMERA, lambda: len(mv) >= 1, "a metric set")
    view = mv[0].views[0]
    K_proc = np.array(view.camera_info.k).reshape(3, 3)
    plan = preprocess.plan_resize((680, 1208), 140)
    np.testing.assert_allclose(K_proc, preprocess.K_cam_to_proc(pinhole_K(1208, 680, 60.0), plan), rtol=1e-9)
    factor = 0.5 * (K_proc[0, 0] + K_proc[1, 1]) / 300.0
    depth = conv.image_to_array(view.depth)
    finite = np.isfinite(depth)  # sky is +Inf (REP 118)
    np.testing.assert_allclose(depth[finite], _relative_depth(140)[finite] * factor, rtol=1e-5)
    assert mv[0].is_metric and mv[0].scale_source == "metric_model"


def test_metric_model_without_camera_info_publishes_relative_depth_and_says_so(tmp_path, domain_id, checker):
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    info = checker.collect(CameraInfo, "front/depth/camera_info")
    sky = checker.collect(Image, "front/sky/mask")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    log = _run(tmp_path, domain_id, checker,
               {"model": "random:da3metric-large@0", "camera_names": ["front"], "process_res": 140,
                "backend": "torch", "diagnostics_period_s": 0.5},
               {**ONE_CAMERA, "publish_camera_info": False},
               lambda: len(mv) >= 2 and sky and _values(diags).get("no_intrinsics") == "front", "depth without K")
    m = mv[-1]
    assert not m.is_metric and m.scale_source == "none" and not info  # no K: no camera_info, relative depth
    depth = conv.image_to_array(m.views[0].depth)
    np.testing.assert_allclose(depth[np.isfinite(depth)], _relative_depth(140)[np.isfinite(depth)], rtol=1e-5)
    assert _values(diags)["errors"] == "0"
    assert log.count("depth stays RELATIVE") == 1  # said once, not every set
    assert "Traceback" not in log


def test_hfov_deg_gives_the_focal_when_there_is_no_camera_info(tmp_path, domain_id, checker):
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    _run(tmp_path, domain_id, checker,
         {"model": "random:da3mono-large@0", "camera_names": ["front"], "process_res": 140, "backend": "torch",
          "cameras": {"front": {"hfov_deg": 75.0}}},
         {**ONE_CAMERA, "publish_camera_info": False}, lambda: len(mv) >= 1, "a set with K from hfov_deg")
    K_proc = np.array(mv[0].views[0].camera_info.k).reshape(3, 3)
    expected = preprocess.K_cam_to_proc(pinhole_K(1208, 680, 75.0), preprocess.plan_resize((680, 1208), 140))
    np.testing.assert_allclose(K_proc, expected, rtol=1e-9)  # camera_info (and clouds) from the field of view
    assert not mv[0].is_metric  # da3mono-large is relative whatever K


def test_the_pair_publishes_metres_and_its_scale(tmp_path, domain_id, checker):
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    stereo = {"camera_names": ["left", "right"], "rate_hz": 1.0,
              "sources": [f"image:{PHOTO}", f"image:{EXAMPLES / 'SOH_010.png'}"]}
    _run(tmp_path, domain_id, checker,
         {"model": "random:da3-small@0", "metric_model": "random:da3metric-large@0", "metric.every_n_sets": 2,
          "camera_names": ["left", "right"], "process_res": 140, "backend": "torch", "diagnostics_period_s": 0.5},
         stereo, lambda: len(mv) >= 2 and _values(diags).get("scale_source") == "metric_model", "two paired sets",
         timeout_s=200)
    first, second = mv[0], mv[1]
    assert first.is_metric and first.scale_source == "metric_model" and math.isfinite(first.scale)
    assert math.isfinite(first.scale_raw) and math.isnan(second.scale_raw)  # every 2nd set: no metric forward
    assert second.is_metric and second.scale == first.scale  # the scale is reused in between
    assert all(v.has_pose for v in first.views)
