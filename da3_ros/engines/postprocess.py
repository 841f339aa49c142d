"""The data-dependent steps upstream runs inside its forward, kept out of the exported graph (numpy).

Upstream samples 100 000 random pixels when a quantile is taken over more; here the quantile is exact (same
linear interpolation as ``torch.quantile``), so results are deterministic and equal upstream's whenever it
does not sample.
"""
from __future__ import annotations

import logging

import numpy as np

from da3_ros.models.registry import METRIC_CANONICAL_FOCAL_PX

_LOG = logging.getLogger(__name__)
# One threshold for everything sky: upstream's compute_sky_mask (>= 0.3) decides which pixels get the sky fill,
# a fake depth, so those pixels are sky everywhere (+Inf, sky/mask, cloud.drop_sky). Upstream's
# OutputProcessor labels sky at >= 0.5 for its own output; a 0.5 mask would publish the 0.3-0.5 band as
# finite distances, all at the one fill depth.
SKY_THRESHOLD = 0.3
NESTED_SKY_DEPTH_MAX = 200.0  # upstream's nested model caps the sky fill at 200 (metres)
MIN_PIXELS = 10  # upstream's lower bound on sky / non-sky pixel counts


def fill_sky(depth: np.ndarray, sky_prob: np.ndarray) -> np.ndarray:
    """Mono/metric models: sky pixels (``SKY_THRESHOLD``) take the 99th percentile of non-sky depth (upstream)."""
    non_sky = sky_prob < SKY_THRESHOLD
    if non_sky.sum() <= MIN_PIXELS or (~non_sky).sum() <= MIN_PIXELS:
        return depth
    out = depth.copy()
    out[~non_sky] = np.quantile(depth[non_sky], 0.99)
    return out


def align_nested(depth: np.ndarray, conf: np.ndarray, extrinsics: np.ndarray, K: np.ndarray,
                 metric_raw: np.ndarray, sky_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The nested model's metric alignment: (depth, confidence, extrinsics) in metres and the scale applied.

    The metric branch's output is scaled with the any-view branch's intrinsics (focal/300); one least-squares
    scale over confident (>= median), non-sky, positive pixels maps the any-view depth onto it; sky becomes
    min(p99 of non-sky depth, 200 m) with confidence 1. With too few usable pixels (upstream asserts) the
    depth stays unscaled and the scale returned is NaN, for the caller to handle.
    """
    focal = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    metric_m = metric_raw * (focal / METRIC_CANONICAL_FOCAL_PX)[:, None, None]
    non_sky = sky_prob < SKY_THRESHOLD
    if non_sky.sum() <= MIN_PIXELS:
        _LOG.warning("nested model: too few non-sky pixels (%d) to align scale", int(non_sky.sum()))
        return depth, conf, extrinsics, float("nan")
    median_conf = np.quantile(conf[non_sky], 0.5)
    mask = (conf >= median_conf) & non_sky & (metric_m > 1e-2) & (depth > 1e-3)
    a, b = metric_m[mask].astype(np.float64), depth[mask].astype(np.float64)
    scale = float(np.dot(a, b) / max(np.dot(b, b), 1e-12))
    depth = (depth * np.float32(scale)).astype(np.float32)
    extrinsics = extrinsics.copy()
    extrinsics[:, :3, 3] *= scale
    sky_depth = min(float(np.quantile(depth[non_sky], 0.99)), NESTED_SKY_DEPTH_MAX)
    depth[~non_sky] = sky_depth
    conf = conf.copy()
    conf[~non_sky] = 1.0
    return depth, conf, extrinsics, scale
