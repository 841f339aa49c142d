"""Alignment of consecutive temporal windows: robust, confidence-weighted Sim(3) and scale fits (numpy only).

Two windows that share views (keyframes, or the view that was the previous window's reference and became a
keyframe) see the same pixels of the same images twice. Each window has its own world frame and unit, so the
same pixel lifted to 3-D (depth, K, pose of that window) gives a point in each window's world. The fit finds
the similarity ``S_target_source`` (``X_target = s R X_source + t``) that maps the source window (the newer one)
into the target window (the older one), as DA3-Streaming aligns its overlapping chunks: confidence-weighted
Umeyama inside IRLS with Huber weights. The first guess is the shared views' own poses with the weighted median
depth ratio as scale, which outliers cannot pull; points beyond ``trim_k`` robust standard deviations (MAD) of
it never enter the IRLS, whose Huber threshold (a robust std) may only shrink; a final refit on the points
within ``trim_k`` robust std gives gross outliers (corrupted pixels, even with a high confidence) zero rather
than bounded influence, so they do not move the result at all. Breakdown: outliers holding half the
confidence weight of the shared pixels, or a first guess the network's own poses get badly wrong.
Frames and ``T_a_b`` follow ``da3_ros.geometry``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from da3_ros.core.geometry import invert_T, nearest_rotation, valid_mask
from da3_ros.core.prediction import Prediction

MAD_TO_STD = 1.4826  # robust standard deviation of Gaussian residuals from their median absolute value


@dataclass(frozen=True)
class RobustConfig:
    """Tuning of the robust fits. Residual scales are robust standard deviations (``MAD_TO_STD`` x median |r|)."""

    huber_k: float = 1.345  # Huber threshold in robust standard deviations (95 % efficiency on Gaussian noise)
    trim_k: float = 4.0  # the final refit keeps points within this many robust standard deviations
    max_iterations: int = 50
    tolerance_rel: float = 1e-12  # stop when the transform changes by less than this (relative to the scene)
    sigma_floor_rel: float = 1e-6  # robust std never below this x the scene size (log units for the scale):
    # float32 depth is exact to ~6e-8, so smaller residuals are rounding, never outliers (trimming them is wrong)
    min_points: int = 100  # fewer valid shared pixels than this: no fit (AlignmentError)
    stride_px: int = 2  # use every stride-th row and column of the shared views (cost; the fit barely changes)
    max_points: int = 20_000  # at most this many pairs enter a fit, evenly spread (each IRLS step sorts them:
    # 4 shared 504x280 views at stride 2 are 140 k pairs, 1.5 s a fit; 20 k: a fraction of the forward)


class AlignmentError(ValueError):
    """Two windows cannot be aligned (no shared view, too few valid pixels, degenerate geometry)."""


@dataclass(frozen=True)
class AlignmentFit:
    """The similarity ``S_target_source`` between two windows, and how well it fits.

    ``X_target = scale * R_target_source @ X_source + t_target_source_units``: ``scale`` is target units per source
    unit; ``t`` is in target units. ``method`` is "sim3" (fitted on point maps) or "scale" (scale fitted on
    depth ratios, R and t from the shared views' poses).
    """

    method: str
    scale: float
    R_target_source: np.ndarray  # (3, 3) float64
    t_target_source_units: np.ndarray  # (3,) float64, target units
    residual_rms_units: float  # RMS residual of the inliers in target units: 3-D distance for "sim3"; for
    # "scale" the RMS log residual x the median target depth
    residual_rel: float  # the same, relative to depth (unit-free): RMS of |r| / depth for sim3, of log ratio for scale
    inlier_fraction: float  # fraction of the shared valid pixels kept by the final refit
    n_points: int  # shared valid pixels used
    iterations: int

    @property
    def S_target_source(self) -> np.ndarray:
        """The (4, 4) similarity matrix [[s R, t], [0, 1]]."""
        return sim3_matrix(self.scale, self.R_target_source, self.t_target_source_units)


def sim3_matrix(scale: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) similarity [[scale R, t], [0, 1]] (float64)."""
    S = np.eye(4)
    S[:3, :3] = scale * np.asarray(R, np.float64)
    S[:3, 3] = np.asarray(t, np.float64)
    return S


def sim3_parts(S: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, R, t) of a (4, 4) similarity; the scale is the cube root of det(s R)."""
    S = np.asarray(S, np.float64)
    scale = float(np.cbrt(np.linalg.det(S[:3, :3])))
    if not scale > 0:
        raise ValueError(f"not a similarity with a positive scale: det = {np.linalg.det(S[:3, :3])}")
    return scale, nearest_rotation(S[:3, :3] / scale), S[:3, 3].copy()


def weighted_umeyama(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares similarity (Umeyama 1991): argmin sum w |target - (s R source + t)|^2.

    source, target: (M, 3); weights: (M,) >= 0 with a positive sum. Returns the (4, 4) ``S_target_source``.
    """
    w = np.asarray(weights, np.float64)
    w_sum = float(w.sum())
    if not w_sum > 0:
        raise AlignmentError("all point weights are zero: nothing to fit")
    mu_s = w @ source / w_sum
    mu_t = w @ target / w_sum
    xs, xt = source - mu_s, target - mu_t
    cov = (xt * w[:, None]).T @ xs / w_sum  # (3, 3) target-source cross-covariance
    var_s = float(w @ np.einsum("ij,ij->i", xs, xs)) / w_sum
    if not var_s > 0:
        raise AlignmentError("the source points are all at one place: the scale is undetermined")
    U, D, Vt = np.linalg.svd(cov)
    sign = np.ones(3)
    sign[2] = np.sign(np.linalg.det(U) * np.linalg.det(Vt)) or 1.0  # a rotation, never a reflection
    R = (U * sign) @ Vt
    scale = float(D @ sign) / var_s
    return sim3_matrix(scale, R, mu_t - scale * R @ mu_s)


def _spread(m: int, max_points: int) -> np.ndarray | slice:
    """Indices of at most ``max_points`` of ``m`` pairs, evenly spread (deterministic: the same pairs each run)."""
    return slice(None) if m <= max_points else np.linspace(0, m - 1, max_points).round().astype(np.int64)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _robust_sigma(r_abs: np.ndarray, weights: np.ndarray, floor: float) -> float:
    return max(MAD_TO_STD * _weighted_median(r_abs, weights), floor)


def _huber(r_abs: np.ndarray, delta: float) -> np.ndarray:
    return np.where(r_abs <= delta, 1.0, delta / np.maximum(r_abs, delta))


def _residuals(S: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    return np.linalg.norm(tgt - src @ S[:3, :3].T - S[:3, 3], axis=1)


def fit_sim3_robust(source: np.ndarray, target: np.ndarray, confidence: np.ndarray,
                    depth_target: np.ndarray | None = None, init: np.ndarray | None = None,
                    cfg: RobustConfig = RobustConfig()) -> AlignmentFit:
    """Confidence-weighted Sim(3) inside IRLS with Huber weights, then one trimmed refit (see the module).

    source, target: (M, 3) corresponding points; confidence: (M,) > 0, the weight of each pair;
    depth_target: (M,) the target points' depths, to make ``residual_rel`` (default: their distance to the origin);
    init: a (4, 4) first guess (default: the plain weighted fit, which outliers pull).
    """
    pick = _spread(len(source), cfg.max_points)
    src, tgt = np.asarray(source, np.float64)[pick], np.asarray(target, np.float64)[pick]
    conf = np.asarray(confidence, np.float64)[pick]
    if depth_target is not None:
        depth_target = np.asarray(depth_target, np.float64)[pick]
    if len(src) < cfg.min_points:
        raise AlignmentError(f"{len(src)} shared valid points, the fit needs at least {cfg.min_points}")
    size = float(np.median(np.linalg.norm(tgt - np.median(tgt, axis=0), axis=1))) or 1.0  # target units
    floor = cfg.sigma_floor_rel * size
    S = weighted_umeyama(src, tgt, conf) if init is None else np.asarray(init, np.float64)
    r = _residuals(S, src, tgt)
    sigma = _robust_sigma(r, conf, floor)
    # Huber's influence is bounded, not zero: far, confident outliers (with a lever arm on R and s) would still
    # pull the fit, widen the threshold and pull harder. So the points beyond trim_k robust std of the first
    # guess never enter the IRLS, and the robust std may only shrink.
    pool = r <= cfg.trim_k * sigma
    src_p, tgt_p, conf_p = src[pool], tgt[pool], conf[pool]
    it = 0
    while it < cfg.max_iterations:
        it += 1
        r = _residuals(S, src_p, tgt_p)
        sigma = min(sigma, _robust_sigma(r, conf_p, floor))
        S_new = weighted_umeyama(src_p, tgt_p, conf_p * _huber(r, cfg.huber_k * sigma))
        # change of s R relative to s, of t relative to the scene's size: both unit-free
        change = max(float(np.abs(S_new[:3, :3] - S[:3, :3]).max()) / abs(S[0, :3] @ S[0, :3]) ** 0.5,
                     float(np.abs(S_new[:3, 3] - S[:3, 3]).max()) / size)
        S = S_new
        if change <= cfg.tolerance_rel:
            break
    r = _residuals(S, src, tgt)
    keep = r <= cfg.trim_k * min(sigma, _robust_sigma(r[pool], conf_p, floor))
    S = weighted_umeyama(src[keep], tgt[keep], conf[keep])
    r = _residuals(S, src[keep], tgt[keep])
    scale, R, t = sim3_parts(S)
    depth = np.linalg.norm(tgt, axis=1) if depth_target is None else np.asarray(depth_target, np.float64)
    return AlignmentFit("sim3", scale, R, t, float(np.sqrt(np.mean(r ** 2))),
                        float(np.sqrt(np.mean((r / np.maximum(depth[keep], floor)) ** 2))),
                        float(keep.mean()), len(src), it)


def fit_log_scale_robust(depth_target: np.ndarray, depth_source: np.ndarray, confidence: np.ndarray,
                         cfg: RobustConfig = RobustConfig()) -> tuple[float, float, float, int]:
    """Robust confidence-weighted scale between two depth samples of the same pixels (target ~ scale * source).

    IRLS with Huber weights on the log ratios (a weighted mean that tends to the weighted median for gross
    outliers), then a trimmed refit as for the Sim(3). Returns (scale, RMS log residual of the inliers,
    inlier fraction, iterations).
    """
    pick = _spread(len(confidence), cfg.max_points)
    conf = np.asarray(confidence, np.float64)[pick]
    if len(conf) < cfg.min_points:
        raise AlignmentError(f"{len(conf)} shared valid depths, the fit needs at least {cfg.min_points}")
    log_ratio = np.log(np.asarray(depth_target, np.float64)[pick]) - np.log(np.asarray(depth_source,
                                                                                      np.float64)[pick])
    mu = _weighted_median(log_ratio, conf)
    it, sigma = 0, np.inf
    while it < cfg.max_iterations:
        it += 1
        r = np.abs(log_ratio - mu)
        sigma = min(sigma, _robust_sigma(r, conf, cfg.sigma_floor_rel))  # only shrinks, as for the Sim(3)
        w = conf * _huber(r, cfg.huber_k * sigma)
        mu_new = float(w @ log_ratio / w.sum())
        change, mu = abs(mu_new - mu), mu_new
        if change <= cfg.tolerance_rel:
            break
    r = np.abs(log_ratio - mu)
    keep = r <= cfg.trim_k * min(sigma, _robust_sigma(r, conf, cfg.sigma_floor_rel))
    mu = float(conf[keep] @ log_ratio[keep] / conf[keep].sum())
    return float(np.exp(mu)), float(np.sqrt(np.mean((log_ratio[keep] - mu) ** 2))), float(keep.mean()), it


@dataclass(frozen=True)
class SharedSamples:
    """The valid pixels of the shared views, each seen in both windows (one row per pixel)."""

    points_target: np.ndarray  # (M, 3) float64 in the target window's world frame and unit
    points_source: np.ndarray  # (M, 3) float64 in the source window's world frame and unit
    depth_target: np.ndarray  # (M,) z-depth in the target window's unit
    depth_source: np.ndarray  # (M,)
    confidence: np.ndarray  # (M,) geometric mean of both windows' confidences (1 where a window has none)
    view_weight: np.ndarray  # (V,) summed confidence per shared view (to weigh their poses)


def _lift(pred: Prediction, i: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """View i's pixels (rows, cols) lifted to its window's world frame (float64)."""
    K = pred.K_of(i)
    if K is None or pred.T_cam_world is None:
        raise AlignmentError(f"view {i} has no intrinsics or no pose: temporal alignment needs both (a model "
                             "with camera heads, or camera_info)")
    z = pred.depth[i][rows, cols].astype(np.float64)
    y = (rows - K[1, 2]) / K[1, 1]
    x = (cols - K[0, 2] - K[0, 1] * y) / K[0, 0]
    cam = np.stack([x * z, y * z, z], axis=1)
    T_world_cam = invert_T(pred.T_cam_world[i])
    return cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]


def shared_samples(target: Prediction, source: Prediction, pairs: list[tuple[int, int]],
                   cfg: RobustConfig = RobustConfig()) -> SharedSamples:
    """Corresponding samples of the shared views ``pairs`` = [(view in target, view in source), ...]."""
    if not pairs:
        raise AlignmentError("the windows share no view")
    parts: list[tuple[np.ndarray, ...]] = []
    view_weight = []
    for i_t, i_s in pairs:
        grid = np.zeros(target.hw, bool)
        grid[::cfg.stride_px, ::cfg.stride_px] = True
        ok = grid & valid_mask(target.depth[i_t]) & valid_mask(source.depth[i_s])
        rows, cols = np.nonzero(ok)
        c_t = np.ones(len(rows)) if target.confidence is None else target.confidence[i_t][rows, cols]
        c_s = np.ones(len(rows)) if source.confidence is None else source.confidence[i_s][rows, cols]
        conf = np.sqrt(np.clip(c_t, 0, None).astype(np.float64) * np.clip(c_s, 0, None))
        parts.append((_lift(target, i_t, rows, cols), _lift(source, i_s, rows, cols),
                      target.depth[i_t][rows, cols], source.depth[i_s][rows, cols], conf))
        view_weight.append(float(conf.sum()))
    cat = [np.concatenate([p[k] for p in parts]).astype(np.float64) for k in range(5)]
    keep = cat[4] > 0
    return SharedSamples(cat[0][keep], cat[1][keep], cat[2][keep], cat[3][keep], cat[4][keep],
                         np.asarray(view_weight))


def scale_only_fit(target: Prediction, source: Prediction, pairs: list[tuple[int, int]], samples: SharedSamples,
                   cfg: RobustConfig = RobustConfig()) -> AlignmentFit:
    """Scale from the shared depths; R, t from the shared views' poses in both windows, given that scale.

    For one shared view c: ``S_target_source = T_target_c * scale * T_c_source`` (a camera seen in both windows
    is one camera). With several, R is the weighted chordal mean and t the weighted mean (weights: confidence).
    """
    scale, res_log, inliers, it = fit_log_scale_robust(samples.depth_target, samples.depth_source,
                                                       samples.confidence, cfg)
    assert target.T_cam_world is not None and source.T_cam_world is not None  # _lift checked it
    Rs, ts = [], []
    for i_t, i_s in pairs:
        T_t_c = invert_T(target.T_cam_world[i_t])
        T_c_s = source.T_cam_world[i_s]
        Rs.append(T_t_c[:3, :3] @ T_c_s[:3, :3])
        ts.append(scale * T_t_c[:3, :3] @ T_c_s[:3, 3] + T_t_c[:3, 3])
    w = samples.view_weight / samples.view_weight.sum()
    R = nearest_rotation(np.einsum("v,vij->ij", w, np.stack(Rs)))
    t = w @ np.stack(ts)
    res_units = res_log * float(np.median(samples.depth_target))  # log residual ~ relative depth error
    return AlignmentFit("scale", scale, R, t, res_units, res_log, inliers, len(samples.confidence), it)


def align_windows(target: Prediction, source: Prediction, pairs: list[tuple[int, int]], method: str = "sim3",
                  cfg: RobustConfig = RobustConfig()) -> AlignmentFit:
    """Fit ``S_target_source`` from the shared views ``pairs`` of two window predictions (see the module).

    ``method``: "sim3" fits on the point maps (all 7 degrees of freedom from the pixels), starting from the
    "scale" fit; "scale" fits the scale on depth ratios and takes R, t from the shared views' poses.
    Raises AlignmentError when impossible.
    """
    if method not in ("sim3", "scale"):
        raise ValueError(f"alignment method must be 'sim3' or 'scale', got {method!r}")
    samples = shared_samples(target, source, pairs, cfg)
    by_pose = scale_only_fit(target, source, pairs, samples, cfg)
    if method == "scale":
        return by_pose
    # The poses and the median depth ratio are a first guess that outliers cannot pull (a weighted median breaks
    # down only at half the weight), so Huber's bounded influence starts near the answer, not from a biased fit.
    return fit_sim3_robust(samples.points_source, samples.points_target, samples.confidence, samples.depth_target,
                           by_pose.S_target_source, cfg)
