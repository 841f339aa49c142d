"""Issue 18 (b), (c): the temporal window's core on an analytic scene (da3_ros.core.temporal, no network, no ROS).

Windows are rendered from a textured box along a known trajectory, each in a random frame and unit of its own;
the chained odometry must recover the trajectory and the scale exactly (to float32 depth's precision).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporal_scene import (PERIOD_NS, STAMP0_NS, Run, corrupt_pixels, drive, pose, random_sim3, render_depth,
                            render_image, trajectory)

from da3_ros.core.geometry import invert_T
from da3_ros.core.metric_scale import ScaleFilter
from da3_ros.core.temporal.keyframes import (Keyframe, KeyframeRule, KeyframeStore, ResetReason, assemble_window,
                                             sharpness, shared_views, split_prediction)
from da3_ros.core.temporal.align import (RobustConfig, fit_log_scale_robust, fit_sim3_robust, sim3_parts,
                                        weighted_umeyama)
from da3_ros.core.temporal.chain import ChainConfig, TumWriter, format_tum_line, read_tum, write_tum
from da3_ros.core.temporal.tracker import TemporalConfig, TemporalTracker

RIG_2 = [np.eye(4), pose([0.25, 0.0, 0.02], 0.15)]  # a second camera 25 cm to the right, turned 8.6 degrees


def config(k: int = 3, method: str = "sim3") -> TemporalConfig:
    return TemporalConfig(KeyframeRule(max_keyframes=k), ChainConfig(method=method))


def expected_poses(poses: list[np.ndarray], unit_per_metre: float) -> np.ndarray:
    """The reference camera in the chain frame (itself at the first set), translations in the chain's unit."""
    T = invert_T(poses[0])[None] @ np.stack(poses)
    T[:, :3, 3] *= unit_per_metre
    return T


@pytest.mark.parametrize("method", ["sim3", "scale"])
@pytest.mark.parametrize("rig", [None, RIG_2], ids=["N1", "N2"])
def test_the_chain_recovers_the_trajectory_and_the_scale_of_windows_in_random_frames(method, rig):
    poses = trajectory(16)
    run = drive(config(3, method), poses, rig)
    got = np.stack([s.chain.T_chain_cam for s in run.steps])
    np.testing.assert_allclose(got, expected_poses(poses, run.scales[0]), atol=1e-6 * run.scales[0])
    # one unit over time: every window's depth published in the chain's unit (the first window's)
    for step, pose_k, scale_k in zip(run.steps, poses, run.scales):
        assert step.chain.chain_per_window_unit == pytest.approx(run.scales[0] / scale_k, rel=1e-6)
        np.testing.assert_allclose(step.current.depth[0], render_depth(pose_k) * run.scales[0], rtol=1e-6)
    assert [s.chain.restart for s in run.steps] == [None] * 16  # never restarted
    assert all(s.chain.alignment.inlier_fraction > 0.99 for s in run.steps[1:])
    assert sum(s.keyframe.add for s in run.steps) >= 5  # the window really moved on (evictions included)


def test_a_metric_anchor_puts_the_chain_in_metres_and_drift_is_measured():
    poses = trajectory(12)
    run = drive(config(2), poses, metric=True)
    got = np.stack([s.chain.T_chain_cam for s in run.steps])
    np.testing.assert_allclose(got, expected_poses(poses, 1.0), atol=1e-6)
    assert all(s.chain.is_metric for s in run.steps)
    np.testing.assert_allclose([s.chain.scale_drift for s in run.steps], 0.0, atol=1e-6)
    for step, pose_k in zip(run.steps, poses):
        np.testing.assert_allclose(step.current.depth[0], render_depth(pose_k), rtol=1e-6)
        assert step.current.is_metric
    relative = drive(config(2), poses)
    assert np.isnan([s.chain.scale_drift for s in relative.steps]).all()


@pytest.mark.parametrize("method", ["sim3", "scale"])
def test_a_metric_chain_follows_its_metric_source_not_the_first_windows_metres(method):
    """Issue 23 item 4: the first set's metric scale 20 % off, the later ones right.

    The chain must publish the later sets' depth and the odometry in the right metres (the first set's own
    depth is what it measured), and ``scale_drift`` says the disagreement once, where it happened.
    """
    poses = trajectory(10)
    off = {STAMP0_NS: 1.2}  # the metric source's first value: metres per unit 20 % too large
    run = drive(config(3, method), poses, metric=True, metres_factor=lambda stamp: off.get(stamp, 1.0))
    got = np.stack([s.chain.T_chain_cam for s in run.steps])
    np.testing.assert_allclose(got, expected_poses(poses, 1.0), atol=1e-5)  # metres from the first step on
    np.testing.assert_allclose(run.steps[0].current.depth[0], 1.2 * render_depth(poses[0]), rtol=1e-6)
    for step, pose_k, scale_k in zip(run.steps[1:], poses[1:], run.scales[1:]):
        np.testing.assert_allclose(step.current.depth[0], render_depth(pose_k), rtol=1e-5)
        assert step.chain.chain_per_window_unit * scale_k == pytest.approx(1.0, rel=1e-9)
    drift = [s.chain.scale_drift for s in run.steps]
    assert drift[1] == pytest.approx(0.2, rel=1e-4)  # the alignment carried 1.2: the source says 1.0
    np.testing.assert_allclose(drift[0:1] + drift[2:], 0.0, atol=1e-5)
    assert [s.chain.restart for s in run.steps] == [None] * 10


def test_a_metric_chain_follows_the_scale_filter_as_it_converges():
    """The metric source as the rig gives it: the scale filter's output, starting 20 % off, then right."""
    scale_filter = ScaleFilter()
    values: dict[int, float] = {}

    def filtered(stamp: int) -> float:
        values[stamp] = scale_filter.update(1.2 if stamp == STAMP0_NS else 1.0, stamp / 1e9)
        return values[stamp]
    poses = trajectory(16)
    run = drive(config(3), poses, metric=True, metres_factor=filtered)
    for step, pose_k in zip(run.steps, poses):
        np.testing.assert_allclose(step.current.depth[0], values[step.chain.stamp_ns] * render_depth(pose_k),
                                   rtol=1e-5)
    assert values[run.steps[-1].chain.stamp_ns] == pytest.approx(1.0, abs=1e-9)  # the filter converged
    np.testing.assert_allclose(run.steps[-1].current.depth[0], render_depth(poses[-1]), rtol=1e-5)
    # the odometry's last steps in true metres
    steps_got = np.diff(np.stack([s.chain.T_chain_cam[:3, 3] for s in run.steps[-4:]]), axis=0)
    steps_true = np.diff(expected_poses(poses, 1.0)[-4:, :3, 3], axis=0)
    np.testing.assert_allclose(steps_got, steps_true, atol=1e-5)


@pytest.mark.parametrize("method", ["sim3", "scale"])
def test_corrupted_pixels_even_with_high_confidence_do_not_move_the_odometry(method):
    poses = trajectory(12)
    clean = drive(config(3, method), poses, seed=3)
    dirty = drive(config(3, method), poses, seed=3, corrupt=corrupt_pixels(0.15, 0.03))
    got, want = (np.stack([s.chain.T_chain_cam for s in r.steps]) for r in (dirty, clean))
    np.testing.assert_allclose(got, want, atol=1e-6 * clean.scales[0])
    np.testing.assert_allclose(got, expected_poses(poses, clean.scales[0]), atol=1e-6 * clean.scales[0])
    fractions = [s.chain.alignment.inlier_fraction for s in dirty.steps[1:]]
    np.testing.assert_allclose(fractions, 0.82 ** 2, atol=0.04)  # a pixel corrupted in either window is out


def _points_with_outliers(rng: np.random.Generator, n: int = 2000):
    src = rng.normal(size=(n, 3)) * [3, 2, 1] + [0, 0, 5]
    S = random_sim3(rng)
    tgt = src @ S[:3, :3].T + S[:3, 3]
    conf = rng.uniform(0.5, 2.0, n)
    bad = rng.random(n) < 0.1
    high = bad & (rng.random(n) < 0.3)  # a third of them with 3x the highest confidence
    tgt[bad] += rng.normal(scale=2.0, size=(bad.sum(), 3))
    conf[high] = 6.0
    return src, tgt, conf, S, bad


def test_the_robust_sim3_ignores_outliers_that_move_a_plain_fit():
    src, tgt, conf, S, bad = _points_with_outliers(np.random.default_rng(7))
    fit = fit_sim3_robust(src, tgt, conf)
    np.testing.assert_allclose(fit.S_target_source, S, atol=1e-9)
    assert fit.inlier_fraction == pytest.approx(1 - bad.mean(), abs=0.005)
    assert fit.residual_rms_units < 1e-9
    assert np.abs(weighted_umeyama(src, tgt, conf) - S).max() > 1e-2  # what the outliers do without IRLS/Huber


def test_a_fit_over_many_pairs_uses_an_even_spread_of_them_and_still_ignores_outliers():
    """4 shared 504x280 views are 140 k pairs: a fit takes at most ``max_points`` of them, the same ones each run."""
    src, tgt, conf, S, bad = _points_with_outliers(np.random.default_rng(11), 140_000)
    fits = [fit_sim3_robust(src, tgt, conf) for _ in range(2)]
    assert fits[0].n_points == RobustConfig().max_points < len(src)
    np.testing.assert_allclose(fits[0].S_target_source, S, atol=1e-9)
    assert fits[0].inlier_fraction == pytest.approx(1 - bad.mean(), abs=0.01)
    np.testing.assert_array_equal(fits[0].S_target_source, fits[1].S_target_source)  # deterministic
    scale, _, _, _ = fit_log_scale_robust(np.full(140_000, 3.0), np.full(140_000, 1.5), np.ones(140_000))
    assert scale == pytest.approx(2.0, rel=1e-12)


def test_the_robust_scale_ignores_outliers():
    rng = np.random.default_rng(1)
    d_src = rng.uniform(1, 10, 3000)
    d_tgt = 2.5 * d_src
    conf = rng.uniform(0.5, 2, 3000)
    bad = rng.random(3000) < 0.12
    d_tgt[bad] *= np.exp(rng.choice([-1, 1], bad.sum()) * rng.uniform(0.3, 2, bad.sum()))
    conf[bad & (rng.random(3000) < 0.3)] = 6.0
    scale, residual_log, inliers, _ = fit_log_scale_robust(d_tgt, d_src, conf)
    assert scale == pytest.approx(2.5, rel=1e-12) and residual_log < 1e-12
    assert inliers == pytest.approx(1 - bad.mean(), abs=0.005)
    assert abs(np.exp(np.average(np.log(d_tgt / d_src), weights=conf)) - 2.5) > 1e-2  # a plain weighted mean


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_weighted_umeyama_recovers_any_similarity(seed):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(50, 3))
    S = random_sim3(rng)
    fit = weighted_umeyama(src, src @ S[:3, :3].T + S[:3, 3], rng.uniform(0.1, 1, 50))
    np.testing.assert_allclose(fit, S, atol=1e-9)
    scale, R, _ = sim3_parts(fit)
    assert np.linalg.det(R) == pytest.approx(1.0) and scale > 0


def _keyframe(stamp_ns: int, T: np.ndarray, sharp: float = 1.0, depth: float = 5.0) -> Keyframe:
    return Keyframe(stamp_ns, np.zeros((3, 4, 4), np.float32), T, depth, sharp)


def test_a_stationary_robot_adds_no_keyframe_after_its_first():
    rng = np.random.default_rng(0)
    store = KeyframeStore(KeyframeRule(max_keyframes=4))
    reasons = []
    for k in range(50):  # standing still: pose jitter far below the thresholds, 5 s of sets
        T = pose(rng.normal(scale=1e-3, size=3), rng.normal(scale=1e-3))
        reasons.append(store.consider(_keyframe(STAMP0_NS + k * PERIOD_NS, T)).reason)
    assert reasons == ["first"] + ["stationary"] * 49 and len(store.keyframes) == 1
    run = drive(config(3), [trajectory(1)[0]] * 8)  # the same, through rendered windows and the chain
    assert [s.keyframe.add for s in run.steps] == [True] + [False] * 7
    assert all(w.keyframe_stamps_ns == (STAMP0_NS,) for w in run.windows[1:])


def test_the_rule_says_why_and_the_farthest_keyframe_leaves_first():
    rule = KeyframeRule(max_keyframes=2, min_translation_rel=0.05, min_rotation_deg=5.0, min_interval_ns=PERIOD_NS)
    store = KeyframeStore(rule)
    t0 = STAMP0_NS
    assert store.consider(_keyframe(t0, pose([0, 0, 0]))).reason == "first"
    assert store.consider(_keyframe(t0 + PERIOD_NS // 2, pose([0, 0, 1]))).reason == "too_soon"
    assert store.consider(_keyframe(t0 + PERIOD_NS, pose([0, 0, 1]), sharp=0.3)).reason == "blurred"
    assert store.consider(_keyframe(t0 - 1, pose([0, 0, 1]))).reason == "stamp_not_after_newest"
    assert store.consider(_keyframe(t0 + PERIOD_NS, pose([0, 0, 1]), depth=float("nan"))).reason == "no_depth"
    d = store.consider(_keyframe(t0 + PERIOD_NS, pose([0, 0, 0]), depth=5.0))
    assert (d.reason, d.add) == ("stationary", False)
    d = store.consider(_keyframe(t0 + 2 * PERIOD_NS, pose([0, 0, 0], np.radians(6))))
    assert (d.reason, d.add, d.evict_stamp_ns) == ("parallax", True, None) and d.rotation_deg == pytest.approx(6)
    # full: back near the first pose, so the second (6 degrees away) is the least useful, though not the oldest
    d = store.consider(_keyframe(t0 + 3 * PERIOD_NS, pose([0, 0, 0.3])))
    assert d.evict_stamp_ns == t0 + 2 * PERIOD_NS and store.stamps_ns == (t0, t0 + 3 * PERIOD_NS)
    # driving on: the farthest is the oldest
    d = store.consider(_keyframe(t0 + 4 * PERIOD_NS, pose([0, 0, 0.6])))
    assert d.evict_stamp_ns == t0 and store.stamps_ns == (t0 + 3 * PERIOD_NS, t0 + 4 * PERIOD_NS)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5), st.floats(-0.2, 0.2),
                          st.integers(1, 3 * PERIOD_NS), st.floats(0.2, 2.0)), min_size=1, max_size=40),
       st.integers(1, 5))
def test_the_keyframe_rule_is_deterministic_and_bounded(moves, k):
    def replay() -> list[tuple[bool, str, int | None]]:
        store, T, stamp, out = KeyframeStore(KeyframeRule(max_keyframes=k)), np.eye(4), STAMP0_NS, []
        for dx, dz, yaw, dt, sharp in moves:
            T, stamp = T @ pose([dx, 0, dz], yaw), stamp + dt
            d = store.consider(_keyframe(stamp, T, sharp))
            out.append((d.add, d.reason, d.evict_stamp_ns))
            assert len(store.keyframes) <= k and list(store.stamps_ns) == sorted(set(store.stamps_ns))
        return out
    assert replay() == replay()


def test_sharpness_drops_with_blur():
    T = trajectory(1)[0]
    assert sharpness(render_image(T, blur=3)) < 0.5 * sharpness(render_image(T))


def test_the_window_is_current_views_then_keyframes_oldest_first_and_splits_back():
    store = KeyframeStore(KeyframeRule(max_keyframes=3))
    for k, T in enumerate(trajectory(12)[::4]):
        store.consider(Keyframe(STAMP0_NS + k * PERIOD_NS, np.full((3, 48, 64), k, np.float32), T, 5.0, 1.0))
    current = np.full((2, 3, 48, 64), -1, np.float32)
    batch, layout = assemble_window(current, STAMP0_NS + 9 * PERIOD_NS, store)
    assert batch.shape == (5, 3, 48, 64) and batch.dtype == np.float32
    assert [float(b[0, 0, 0]) for b in batch] == [-1, -1, 0, 1, 2]
    assert layout.keyframe_stamps_ns == store.stamps_ns and layout.reference_view_of(layout.stamp_ns) == 0
    alone, _ = assemble_window(current, STAMP0_NS, KeyframeStore(KeyframeRule()))
    assert alone is current  # K = 0: exactly today's batch
    run = drive(config(3), trajectory(6), RIG_2)
    pred_views = run.steps[-1].current
    assert pred_views.num_views == 2
    older, newer = run.windows[-2], run.windows[-1]
    assert shared_views(older, newer) and all(o == 0 or o >= 2 for o, _ in shared_views(older, newer))
    with pytest.raises(ValueError, match="network size"):
        assemble_window(np.zeros((1, 3, 42, 56), np.float32), STAMP0_NS, store)


def test_split_prediction_takes_views_apart():
    from temporal_scene import network
    poses = trajectory(5)
    pred = network(poses, np.eye(4))
    _, layout = assemble_window(np.zeros((2, 3, 48, 64), np.float32), 0, KeyframeStore(KeyframeRule()))
    layout = type(layout)(0, 2, (1, 2, 3))
    current, keyframes = split_prediction(pred, layout)
    np.testing.assert_array_equal(current.depth, pred.depth[:2])
    np.testing.assert_array_equal(keyframes.T_cam_world, pred.T_cam_world[2:])
    with pytest.raises(ValueError, match="5 views, the window 3"):
        split_prediction(pred, type(layout)(0, 2, (1,)))


def test_resets_restart_the_chain_at_its_last_pose_and_are_counted_once():
    poses = trajectory(12)
    stamps = [STAMP0_NS + k * PERIOD_NS for k in range(6)] + [STAMP0_NS + 5 * PERIOD_NS + 3_000_000_000]  # paused
    stamps += [STAMP0_NS + k * PERIOD_NS for k in range(5)]  # a looping bag: back in time
    run = drive(config(3), poses, stamps_ns=stamps)
    tracker = run.tracker
    restarts = [s.chain.restart for s in run.steps]
    assert restarts == [None] * 6 + [ResetReason.STREAM_PAUSED, ResetReason.STAMP_BACKWARDS] + [None] * 4
    assert run.resets == restarts  # said by the window that follows it
    assert dict(tracker.reset_counts) == {"stream_paused": 1, "stamp_backwards": 1}
    assert [s.chain.chain_id for s in run.steps] == [0] * 6 + [1] + [2] * 5
    assert run.windows[6].keyframe_stamps_ns == () and run.windows[7].keyframe_stamps_ns == ()
    # no jump: the new chain's first pose is the old chain's last, with a covariance that says the link is unknown
    np.testing.assert_allclose(run.steps[6].chain.T_chain_cam, run.steps[5].chain.T_chain_cam, atol=1e-12)
    assert run.steps[6].chain.covariance[0, 0] > 100 * run.steps[5].chain.covariance[0, 0]
    # after a restart the chain goes on exactly, relative to where it restarted
    rel_got = invert_T(run.steps[7].chain.T_chain_cam) @ run.steps[11].chain.T_chain_cam
    rel_true = invert_T(poses[7]) @ poses[11]
    np.testing.assert_allclose(rel_got[:3, :3], rel_true[:3, :3], atol=1e-6)
    tracker.reset(ResetReason.REFERENCE_SILENT)  # what only the caller knows
    assert tracker.reset_counts["reference_silent"] == 1 and tracker.store.keyframes == []


def test_a_window_that_cannot_be_aligned_restarts_the_chain_and_says_why():
    def scramble_third(pred, layout, rng):
        if layout.stamp_ns != STAMP0_NS + 3 * PERIOD_NS:
            return pred
        depth = rng.uniform(0.5, 20, pred.depth.shape).astype(np.float32)  # garbage everywhere
        return type(pred)(depth, False, pred.K_proc, pred.K_source, pred.confidence, None, pred.T_cam_world)
    run = drive(config(3), trajectory(8), corrupt=scramble_third)
    step = run.steps[3].chain
    assert step.restart == ResetReason.ALIGNMENT_FAILED and "inlier fraction" in step.restart_detail
    # the next window is aligned to the garbage one and fails too (documented); then the chain goes on
    assert [s.chain.restart for s in run.steps] == [None] * 3 + [ResetReason.ALIGNMENT_FAILED] * 2 + [None] * 3
    assert run.tracker.reset_counts["alignment_failed"] == 2
    assert run.windows[4].keyframe_stamps_ns == (STAMP0_NS + 3 * PERIOD_NS,)  # the store began afresh


def test_a_metric_scale_arriving_later_restarts_a_relative_chain_in_metres():
    run = drive(config(3), trajectory(4))
    run = drive(config(3), trajectory(8)[4:], metric=True, run=run,
                stamps_ns=[STAMP0_NS + k * PERIOD_NS for k in range(4, 8)])
    assert run.steps[4].chain.restart == ResetReason.METRIC_ANCHOR
    assert not run.steps[3].chain.is_metric and all(s.chain.is_metric for s in run.steps[4:])
    np.testing.assert_allclose([s.chain.scale_drift for s in run.steps[4:]], 0, atol=1e-6)


def test_the_covariance_grows_with_the_residual_and_never_shrinks():
    def noisy(pred, layout, rng):
        depth = pred.depth * (1 + 0.01 * rng.standard_normal(pred.depth.shape)).astype(np.float32)
        return type(pred)(depth, False, pred.K_proc, pred.K_source, pred.confidence, None, pred.T_cam_world)
    clean, dirty = drive(config(3), trajectory(10)), drive(config(3), trajectory(10), corrupt=noisy)
    for run in clean, dirty:
        cov = np.stack([s.chain.covariance for s in run.steps])
        np.testing.assert_array_equal(cov, np.swapaxes(cov, 1, 2))
        assert (np.diff(np.diagonal(cov, axis1=1, axis2=2), axis=0) > 0).all()
    assert dirty.steps[-1].chain.covariance[0, 0] > 10 * clean.steps[-1].chain.covariance[0, 0]
    assert dirty.steps[-1].chain.alignment.residual_rel == pytest.approx(0.01 * np.sqrt(2), rel=0.5)


def test_a_tracker_needs_keyframes():
    with pytest.raises(ValueError, match="temporal.keyframes: 0 is today's behaviour"):
        TemporalTracker(config(0))


def test_the_tum_trajectory_is_read_back_exactly_and_by_evo(tmp_path):
    run = drive(config(3), trajectory(8), metric=True)
    stamps = [s.chain.stamp_ns for s in run.steps]
    poses = np.stack([s.chain.T_chain_cam for s in run.steps])
    path = str(tmp_path / "odometry.tum")
    write_tum(path, stamps, poses)
    got_stamps, got_poses = read_tum(path)
    assert got_stamps.tolist() == stamps  # every ns digit
    np.testing.assert_allclose(got_poses, poses, atol=1e-12)
    assert open(path).read().splitlines()[1].startswith("1700000000.123456789 ")
    from evo.tools import file_interface  # the reader the issue names (evo + rosbags, requirements)
    traj = file_interface.read_tum_trajectory_file(path)
    np.testing.assert_allclose(traj.timestamps, np.array(stamps) / 1e9, rtol=0, atol=1e-6)
    np.testing.assert_allclose(traj.positions_xyz, poses[:, :3, 3], atol=1e-12)
    np.testing.assert_allclose(traj.poses_se3, poses, atol=1e-9)


def test_a_tum_file_cut_short_is_readable_and_bad_lines_are_named(tmp_path):
    path = str(tmp_path / "cut.tum")
    writer = TumWriter(path)
    writer.write(5, np.eye(4))  # not closed: a run killed mid-way
    assert read_tum(path)[0].tolist() == [5]
    writer.close()
    (tmp_path / "bad.tum").write_text("1.5 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match="bad.tum:1: a TUM line has 8 fields"):
        read_tum(str(tmp_path / "bad.tum"))
    with pytest.raises(ValueError, match=">= 0 ns"):
        format_tum_line(-1, np.eye(4))


def test_sets_skipped_on_purpose_are_no_gap_but_real_silence_still_is():
    """Issue 23 item 9: ``--every-n`` processes every n-th set; the skipped ones are heard, not a paused stream."""
    cfg = TemporalConfig(KeyframeRule(max_keyframes=3), ChainConfig(), max_gap_ns=150_000_000)  # 1.5 periods
    poses = trajectory(13)

    def run_every_third(hear: bool, silent: tuple[int, ...] = ()):
        run = Run(tracker=TemporalTracker(cfg))
        for k in range(0, 13, 3):  # processed 300 ms apart: more than max_gap
            for s in range(max(k - 2, 0), k):
                if hear and s not in silent:
                    run.tracker.heard(STAMP0_NS + s * PERIOD_NS)
            drive(cfg, [poses[k]], stamps_ns=[STAMP0_NS + k * PERIOD_NS], run=run)
        return [s.chain.restart for s in run.steps], dict(run.tracker.reset_counts)

    assert run_every_third(hear=True) == ([None] * 5, {})
    assert run_every_third(hear=False) == ([None] + [ResetReason.STREAM_PAUSED] * 4, {"stream_paused": 4})
    # what was heard last counts: sets 7 and 8 silent, the set at 900 ms comes 300 ms after set 6
    restarts, counts = run_every_third(hear=True, silent=(7, 8))
    assert restarts == [None] * 3 + [ResetReason.STREAM_PAUSED, None] and counts == {"stream_paused": 1}
    # a silence BEFORE a heard set counts too: set 4 silent, so 200 ms from set 3 to the heard set 5; set 6 restarts
    restarts, counts = run_every_third(hear=True, silent=(4,))
    assert restarts == [None] * 2 + [ResetReason.STREAM_PAUSED, None, None] and counts == {"stream_paused": 1}
    tracker = TemporalTracker(cfg)
    tracker.heard(STAMP0_NS)  # before the chain's first set: nothing to bridge
    assert not tracker.has_state
