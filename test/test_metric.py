"""Metric scale: the focal rule, the nested/pair alignment, the calibrated rig, the temporal filter.

Exact-math tests on analytic scenes (a plane with a box in front of it at known distances, seen through a
known K) drive the engine's real post-processing with the outputs an ideal network would give; the rig and
the pair run the real networks (random weights) on the real photos.
"""
import math

import numpy as np
import pytest

from da3_ros.core import preprocess
from da3_ros.engines import FrameBatch, create_engine
from da3_ros.ros.messages import SetMessages
from da3_ros.engines.base import IN_IMAGES, Engine
from da3_ros.engines.metric_pair import MetricPairEngine
from da3_ros.engines.postprocess import align_nested
from da3_ros.core.metric_scale import ScaleFilter, ScaleFilterConfig, apply_scale
from da3_ros.models.registry import get_variant
from da3_ros.core.rig import Rig

PLANE_M, BOX_M = 6.0, 2.5


def _scene_m(hw: tuple[int, int]) -> np.ndarray:
    """True metric depth of the scene at the network resolution: a wall at 6 m, a box at 2.5 m in the middle."""
    depth = np.full(hw, PLANE_M, np.float32)
    h, w = hw
    depth[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = BOX_M
    return depth


CAMERAS = [((720, 1280), 900.0, "upper_bound_resize"), ((480, 640), 525.0, "upper_bound_resize"),
           ((680, 1208), 1000.0, "lower_bound_crop"), ((1080, 1920), 1400.0, "upper_bound_crop"),
           ((480, 640), 400.0, "lower_bound_resize")]


@pytest.mark.parametrize("cam_hw, f_cam, method", CAMERAS)
@pytest.mark.parametrize("process_res", [504, 280])
def test_focal_rule_uses_the_focal_at_network_resolution(cam_hw, f_cam, method, process_res):
    """DA3METRIC-LARGE: metres = focal (network pixels, after resize and crop) x output / 300."""
    plan = preprocess.plan_resize(cam_hw, process_res, method)
    K_cam = np.array([[f_cam, 0, cam_hw[1] / 2], [0, f_cam * 1.01, cam_hw[0] / 2], [0, 0, 1]])
    K_proc = preprocess.K_cam_to_proc(K_cam, plan)
    # The focal an ideal network perceives: scaled by the resize only (a crop moves the centre, not the focal).
    f_net = 0.5 * (f_cam * plan.resized_hw[1] / cam_hw[1] + 1.01 * f_cam * plan.resized_hw[0] / cam_hw[0])
    truth = _scene_m(plan.proc_hw)
    raw = truth * 300.0 / f_net  # what DA3METRIC-LARGE outputs for this scene (canonical focal 300 px)
    engine = Engine(get_variant("da3metric-large"), "analytic", False, process_res, method)
    pred = engine._postprocess({"depth": raw[None], "sky": np.zeros((1, *plan.proc_hw), np.float32)},
                               K_proc[None], None, None)
    assert pred.is_metric and pred.scale_source == "metric_model"
    np.testing.assert_allclose(pred.depth[0], truth, rtol=1e-5)
    # The rule at the camera's resolution would be off by the resize factor
    wrong = raw * 0.5 * (K_cam[0, 0] + K_cam[1, 1]) / 300
    assert abs(float(np.median(wrong / truth)) - 1) > 0.02


@pytest.mark.parametrize("cam_hw, f_cam, method", CAMERAS[:3])
def test_the_pair_alignment_gives_the_same_metres_as_the_focal_rule(cam_hw, f_cam, method):
    """An any-view depth in arbitrary units, aligned to the metric branch, comes out at the true distances."""
    plan = preprocess.plan_resize(cam_hw, 504, method)
    K_cam = np.array([[f_cam, 0, cam_hw[1] / 2], [0, f_cam, cam_hw[0] / 2], [0, 0, 1]])
    K_proc = preprocess.K_cam_to_proc(K_cam, plan)[None]
    truth = _scene_m(plan.proc_hw)[None]
    metric_raw = truth * 300.0 / (0.5 * (K_proc[:, 0, 0] + K_proc[:, 1, 1]))[:, None, None]
    relative = truth / 7.3  # the any-view model's own units
    T = np.eye(4)[None].copy()
    T[0, :3, 3] = [0.7, -0.1, 0.2]
    out = {"depth": relative, "depth_conf": np.ones_like(relative), "extrinsics_out": T[:, :3],
           "intrinsics_out": K_proc * 1.3,  # a poor estimate: the pair uses camera_info's focal
           "metric_depth": metric_raw, "sky": np.zeros_like(relative)}
    engine = Engine(dataclass_replace_metric(get_variant("da3-small")), "pair", False)
    engine.metric_source, engine.align_with_camera_K = "metric_model", True
    pred = engine._postprocess(out, K_proc, None, None)
    assert pred.is_metric and pred.scale_source == "metric_model"
    assert pred.scale_raw == pytest.approx(7.3, rel=1e-6)
    np.testing.assert_allclose(pred.depth, truth, rtol=1e-5)
    np.testing.assert_allclose(pred.T_cam_world[0, :3, 3], np.array([0.7, -0.1, 0.2]) * 7.3, rtol=1e-6)


def dataclass_replace_metric(variant):
    import dataclasses

    from da3_ros.models.registry import DepthKind
    return dataclasses.replace(variant, depth_kind=DepthKind.METRIC, has_sky=True)


def test_the_fit_recovers_a_known_scale_despite_outliers_in_masked_pixels():
    rng = np.random.default_rng(0)
    hw = (2, 60, 80)
    metric_m = rng.uniform(1.0, 20.0, hw).astype(np.float32)
    relative = metric_m / 4.0
    conf = rng.uniform(1.0, 2.0, hw).astype(np.float32)
    sky = np.zeros(hw, np.float32)
    sky[:, :10] = 1.0  # sky rows: wildly wrong depth there
    relative[:, :10] = 1000.0
    low = conf < np.quantile(conf[sky < 0.3], 0.5)  # below-median confidence: garbage relative depth
    relative[low & (sky < 0.3)] *= rng.uniform(0.1, 10.0, int((low & (sky < 0.3)).sum())).astype(np.float32)
    K = np.tile(np.array([[300.0, 0, 40], [0, 300.0, 30], [0, 0, 1]]), (2, 1, 1))  # focal 300: raw = metres
    T = np.tile(np.eye(4), (2, 1, 1))
    T[1, :3, 3] = [1.0, 0, 0]
    depth, conf_out, T_out, s = align_nested(relative, conf, T, K, metric_m, sky)
    assert s == pytest.approx(4.0, rel=1e-6)
    assert T_out[1, 0, 3] == pytest.approx(4.0, rel=1e-6)  # translations scale with depth
    good = (~low) & (sky < 0.3)
    np.testing.assert_allclose(depth[good], metric_m[good], rtol=1e-5)
    assert np.all(conf_out[sky >= 0.3] == 1.0)


def test_an_all_sky_frame_keeps_the_last_good_scale():
    """Upstream asserts on such frames; here the set keeps the last good scale, counted as held."""
    hw = (1, 30, 40)
    depth, conf = np.ones(hw, np.float32), np.ones(hw, np.float32)
    K, T = np.tile(np.eye(3) * [300, 300, 1], (1, 1, 1)), np.eye(4)[None]
    _, _, _, s = align_nested(depth, conf, T, K, np.ones(hw, np.float32), np.ones(hw, np.float32))
    assert math.isnan(s)
    f = ScaleFilter()
    assert f.update(2.0, 0.0) == 2.0
    assert f.update(s, 0.1) == 2.0 and f.held == 1


def test_filter_converges_and_bounds_its_rate():
    f = ScaleFilter(ScaleFilterConfig(window=5, max_rate_per_s=0.2, outlier_ratio=1.5))
    f.update(1.0, 0.0)
    values = [f.update(1.3, 0.1 * k) for k in range(1, 60)]  # 10 Hz, a real change of +30 % (not an outlier)
    steps = np.diff([1.0, *values])
    assert np.all(np.log1p(steps / np.array([1.0, *values[:-1]])) <= math.log1p(0.2) * 0.1 + 1e-12)
    assert values[-1] == pytest.approx(1.3, rel=1e-9)  # converged
    assert values[5] < 1.2  # but not at once


def test_filter_ignores_a_single_outlier_and_resets_on_a_sustained_jump():
    f = ScaleFilter(ScaleFilterConfig(window=5, max_rate_per_s=1.0, outlier_ratio=1.5, reset_after=4))
    for k in range(10):
        f.update(2.0, 0.1 * k)
    assert f.update(9.0, 1.0) == pytest.approx(2.0) and f.outliers == 1  # one wild set: ignored
    assert f.update(2.0, 1.1) == pytest.approx(2.0)
    out = [f.update(5.0, 1.2 + 0.1 * k) for k in range(4)]  # the scene really changed and stays changed
    assert out[:3] == [pytest.approx(2.0)] * 3 and out[3] == pytest.approx(5.0) and f.resets == 1
    f2 = ScaleFilter(ScaleFilterConfig(enabled=False))
    assert [f2.update(v, 0.1 * k) for k, v in enumerate([2.0, 9.0, float("nan")])] == [2.0, 9.0, 9.0]


def test_apply_scale_rescales_depth_and_translations_together(soh_images):
    engine = create_engine("torch", "random:da3-small@0", process_res=140)
    pred = engine.infer(FrameBatch(soh_images))
    import dataclasses
    pred = dataclasses.replace(pred, scale_source="nested", scale_raw=2.0, scale=2.0)
    out = apply_scale(pred, 3.0)
    np.testing.assert_allclose(out.depth, pred.depth * 1.5, rtol=1e-6)
    np.testing.assert_allclose(out.T_cam_world[:, :3, 3], pred.T_cam_world[:, :3, 3] * 1.5)
    assert out.is_metric and out.scale == 3.0
    assert not apply_scale(dataclasses.replace(pred, scale_raw=float("nan")), None).is_metric


def test_a_calibrated_rig_gives_depth_in_the_baseline_s_units(soh_images):
    """Poses conditioned on known extrinsics in metres: depth in metres, is_metric, for any N >= 2.

    The same rig at 5x the baseline sees the same normalised input, so its depth is exactly 5x.
    """
    engine = create_engine("torch", "random:da3-small@0", process_res=280)
    K = np.tile(np.array([[900.0, 0, 604], [0, 900.0, 340], [0, 0, 1]]), (2, 1, 1))
    depths = []
    for baseline_m in (0.12, 0.6):
        T_ref_cam = np.tile(np.eye(4), (2, 1, 1))
        T_ref_cam[1, 0, 3] = baseline_m
        result = Rig(engine, 0, T_ref_cam).process(list(soh_images), list(K), stamp_s=0.0)
        pred = result.prediction
        assert result.conditioned and pred.is_metric and pred.scale_source == "rig"
        np.testing.assert_allclose(result.T_ref_cam[1, :3, 3], [baseline_m, 0, 0], atol=1e-9)
        depths.append(pred.depth)
    np.testing.assert_allclose(depths[1], depths[0] * 5.0, rtol=1e-5)


def test_the_pair_runs_both_models_and_reuses_the_scale_between_metric_sets(soh_images):
    main = create_engine("torch", "random:da3-small@0", process_res=140)
    metric = create_engine("torch", "random:da3metric-large@0", process_res=140)
    pair = MetricPairEngine(main, metric, every_n_sets=2)
    rig = Rig(pair, 0, scale_filter=ScaleFilterConfig(enabled=False))
    K = [np.array([[900.0, 0, 604], [0, 900.0, 340], [0, 0, 1]])] * 2
    first = rig.process(list(soh_images), K, stamp_s=0.0).prediction
    second = rig.process(list(soh_images), K, stamp_s=0.5).prediction
    assert first.is_metric and first.scale_source == "metric_model" and first.sky_mask is not None
    assert math.isfinite(first.scale_raw) and first.scale == first.scale_raw
    assert math.isnan(second.scale_raw) and second.scale == first.scale and second.is_metric  # metric skipped
    np.testing.assert_allclose(second.depth, first.depth, rtol=1e-6)  # same images, same scale
    alone = main.infer(FrameBatch(list(soh_images), K_cam=np.stack(K)))
    np.testing.assert_allclose(first.depth[first.sky_mask == 0],
                               (alone.depth * first.scale)[first.sky_mask == 0], rtol=1e-5)
    with pytest.raises(ValueError, match="must be a da3metric-large checkpoint"):
        MetricPairEngine(main, main)


def _published(pred, cfg):
    """The set's outputs as the node publishes them (one camera per view)."""
    from da3_ros.core.results import SetResult
    from da3_ros.core.rig import RigResult

    n = pred.depth.shape[0]
    result = RigResult(pred, 0, np.tile(np.eye(4), (n, 1, 1)), conditioned=False)
    names = [f"cam{i}" for i in range(n)]
    return SetResult(result, names, names, [0] * n, cfg, "test", [], None)


def _sky_zones(hw: tuple[int, int]) -> np.ndarray:
    """Sky probabilities: clear sky (0.9) on top, haze in the disputed band 0.3..0.5, ground (0.05) below."""
    sky = np.full(hw, 0.05, np.float32)
    sky[: hw[0] // 4] = 0.9
    sky[hw[0] // 4: hw[0] // 2] = np.linspace(0.3, 0.499, hw[1], dtype=np.float32)
    return sky


@pytest.mark.parametrize("path", ["metric_model", "pair"])
def test_one_sky_threshold_for_depth_fill_inf_mask_and_clouds(path):
    """A pixel whose depth is upstream's sky fill (sky >= 0.3) is sky everywhere: +Inf, sky/mask, no point.

    With two thresholds (fill at 0.3, mask at 0.5) the band between them was published as a finite distance,
    all at the one fill depth (a plane of fake points in the clouds).
    """
    from da3_ros.core.config import OutputConfig

    hw = (60, 80)
    K = np.array([[[70.0, 0, 39.5], [0, 70.0, 29.5], [0, 0, 1]]])
    sky = _sky_zones(hw)[None]
    depth = np.random.default_rng(0).uniform(1.0, 5.0, (1, *hw)).astype(np.float32)
    if path == "metric_model":
        engine = Engine(get_variant("da3metric-large"), "analytic", False, 84)
        out = {"depth": depth, "sky": sky}
    else:
        engine = Engine(dataclass_replace_metric(get_variant("da3-small")), "pair", False, 84)
        engine.metric_source, engine.align_with_camera_K = "metric_model", True
        out = {"depth": depth, "depth_conf": np.ones_like(depth), "extrinsics_out": np.eye(4)[None, :3],
               "intrinsics_out": K, "metric_depth": depth * 2.0, "sky": sky}
    pred = engine._postprocess(out, K, None, None)
    filled = sky >= 0.3
    assert pred.sky_mask is not None and np.array_equal(pred.sky_mask, filled)
    published = _published(pred, OutputConfig(stride=1))
    assert np.array_equal(np.isinf(published.depth_arrays), filled)  # +Inf exactly where the fill went
    sky = np.frombuffer(bytes(SetMessages(published).sky(0).data), np.uint8).reshape(hw)
    assert np.array_equal(sky == 255, filled[0])
    kept = _published(pred, OutputConfig(stride=1, sky_as_inf=False))
    assert np.isfinite(kept.depth_arrays).all()  # sky_as_inf off: the fill value, but still no cloud point
    assert len(kept.cloud_arrays(0)[0]) == int((~filled).sum())


def test_the_pair_s_sky_does_not_flicker_between_metric_sets(soh_images):
    """metric.every_n_sets = 3: the sets in between keep the last metric set's sky (mask, +Inf, dropped points).

    Without it the sky mask, +Inf sky and cloud.drop_sky came and went: two sets of three had no sky at all.
    """
    from da3_ros.core.config import OutputConfig

    main = create_engine("torch", "random:da3-small@0", process_res=140)
    metric = create_engine("torch", "random:da3metric-large@0", process_res=140)
    rig = Rig(MetricPairEngine(main, metric, every_n_sets=3), 0, scale_filter=ScaleFilterConfig(enabled=False))
    K = [np.array([[900.0, 0, 604], [0, 900.0, 340], [0, 0, 1]])] * 2
    masks, infs, points = [], [], []
    for k in range(5):
        pred = rig.process(list(soh_images), K, stamp_s=0.5 * k).prediction
        assert pred.sky_mask is not None, f"set {k}: sky unknown"
        out = _published(pred, OutputConfig(stride=2))
        masks.append(pred.sky_mask)
        infs.append(np.isinf(out.depth_arrays))
        points.append(sum(len(out.cloud_arrays(i)[0]) for i in range(2)))
    for k in range(1, 5):  # same images: every set says the same sky
        assert np.array_equal(masks[k], masks[0]) and np.array_equal(infs[k], infs[0]), f"set {k}"
        assert points[k] == points[0], f"set {k}: {points[k]} points, set 0 had {points[0]}"
    assert np.array_equal(infs[0], masks[0])


def _pair_processor(every_n_sets: int, temporal_keyframes: int = 0):
    """Two cameras (left, right) through the per-set processor, the pair's metric model on every k-th set."""
    from da3_ros.core.config import CoreConfig, OutputConfig
    from da3_ros.core.processor import FrameSetProcessor
    from da3_ros.core.static_tf import StaticTfBuffer
    from da3_ros.core.temporal.keyframes import KeyframeRule
    from da3_ros.core.temporal.tracker import TemporalConfig, TemporalTracker

    main = create_engine("torch", "random:da3-small@0", process_res=140)
    metric = create_engine("torch", "random:da3metric-large@0", process_res=140)
    forward = metric._forward

    def with_sky(feeds):  # random weights predict no sky: each view's sky is its brighter half (its own image's)
        out = dict(forward(feeds))
        grey = feeds[IN_IMAGES][0].mean(axis=1)
        out["sky"] = (grey > np.median(grey, axis=(1, 2), keepdims=True)).astype(np.float32)
        return out
    metric._forward = with_sky
    tracker = (TemporalTracker(TemporalConfig(KeyframeRule(max_keyframes=temporal_keyframes)))
               if temporal_keyframes else None)
    rig = Rig(MetricPairEngine(main, metric, every_n_sets=every_n_sets), 0,
              scale_filter=ScaleFilterConfig(enabled=False), temporal=tracker)
    return FrameSetProcessor(rig, CoreConfig(["left", "right"], ["", ""], "off", OutputConfig()), StaticTfBuffer())


def _sky_run(processor, images, present_per_set):
    """Each set's sky mask per camera name (None: sky unknown), and its window's view count."""
    from da3_ros.core.processor import CameraFrame, Processed

    out = []
    for k, present in enumerate(present_per_set):
        frames = [CameraFrame(img, 1_000_000_000 + k * 100_000_000, f"{c}_optical_frame") if c in present else None
                  for c, img in zip(("left", "right"), images)]
        done = processor.process(frames)
        assert isinstance(done, Processed), done
        pred, names = done.outputs.pred, done.outputs.camera_names
        out.append(({c: None if pred.sky_mask is None else pred.sky_mask[i] for i, c in enumerate(names)},
                    done.outputs.result.window_views or len(names)))
    return out


def test_the_pair_s_sky_does_not_flicker_while_a_camera_is_silent(soh_images):
    """Issue 23 item 8: a silent camera changes the view count; each camera keeps its own last sky.

    Before, the last sky was reused only at an unchanged view count: a set without one camera had no sky.
    """
    images = [soh_images[0], np.ascontiguousarray(soh_images[1][::-1])]  # two different views
    sets = [("left", "right"), ("right",), ("left",), ("right",)]  # the metric model on set 0 only (every 4th)
    skies = _sky_run(_pair_processor(every_n_sets=4), images, sets)
    first = skies[0][0]
    assert first["left"] is not None and first["right"] is not None
    assert first["left"].any() and first["right"].any() and not np.array_equal(first["left"], first["right"])
    for k, (sky, _) in enumerate(skies[1:], 1):
        for camera, mask in sky.items():
            assert mask is not None, f"set {k}: {camera}'s sky unknown"
            assert np.array_equal(mask, first[camera]), f"set {k}: {camera} took another camera's sky"


def test_the_pair_s_sky_does_not_flicker_while_the_temporal_window_fills(soh_images):
    """Issue 23 item 8: N -> N + K views as keyframes join; the current views keep their cameras' sky."""
    images = [soh_images[0], np.ascontiguousarray(soh_images[1][::-1])]
    skies = _sky_run(_pair_processor(every_n_sets=3, temporal_keyframes=2), images, [("left", "right")] * 5)
    views = [views for _, views in skies]
    assert views[0] == 2 and views[1] == 3 and len(set(views)) >= 2  # the window fills: 2 -> 2 + keyframes
    first = skies[0][0]
    for k, (sky, _) in enumerate(skies[1:], 1):  # sets 1, 2 and 4 without the metric model; 3 with it
        for camera in ("left", "right"):
            assert sky[camera] is not None and np.array_equal(sky[camera], first[camera]), f"set {k}: {camera}"
