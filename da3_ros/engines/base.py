"""What every backend shares: camera frames in, Prediction out. Backends only implement ``_forward``.

``Engine`` satisfies the core's ``DepthEngine`` protocol (checked by mypy: engines/contract.py).

Torch-free: preprocessing and post-processing are numpy, so a backend that needs no torch (ONNX Runtime,
TensorRT's runtime, a remote server) never loads it. Stage timings come back with each Prediction.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from da3_ros.core import preprocess
from da3_ros.engines import postprocess
from da3_ros.engines.graph_io import IN_EXTRINSICS, IN_IMAGES, IN_INTRINSICS, graph_outputs  # noqa: F401 (re-exported)
from da3_ros.core.errors import ConfigError
from da3_ros.core.geometry import invert_T
from da3_ros.models.registry import METRIC_CANONICAL_FOCAL_PX, DepthKind, Variant
from da3_ros.core.engine_api import FrameBatch, PreparedBatch  # noqa: F401 (re-exported: engines take it)
from da3_ros.core.prediction import Prediction

_LOG = logging.getLogger(__name__)
REF_VIEW_STRATEGIES = ("first", "middle", "saddle_balanced", "saddle_sim_range")
SKY_THRESHOLD = postprocess.SKY_THRESHOLD  # the sky mask is where the sky fill went (one threshold)


class BackendUnavailable(RuntimeError):
    """A backend cannot run here: its package or device is missing. The message names what to install."""


class EngineConfigError(ConfigError):
    """A backend, device and precision that cannot hold together (or not here); the message names the fix."""


@dataclass(frozen=True)
class EngineSettings:
    """What an engine really runs on: its backend, device ('cpu', 'cuda', 'cuda:1', 'server') and precision."""

    backend: str
    device: str
    precision: str


class EngineUnavailable(RuntimeError):
    """The engine cannot run this set now (a remote server down, lost or too slow); it retries by itself.

    The set is dropped and counted; no result is published for it.
    """


class Engine:
    """Preprocess -> backend forward -> postprocess; identical for every backend.

    View 0 is the reference view by default (``ref_view_strategy="first"``): a rig pins its reference camera,
    and fixed-N graphs hold no data-dependent view selection. Upstream's automatic strategies are available
    on the torch backend only.
    """

    backend = "base"

    def __init__(self, variant: Variant, label: str, trained: bool, process_res: int = 504,
                 process_res_method: str = "upper_bound_resize", ref_view_strategy: str = "first",
                 mixed_resolution: str = "crop"):
        if ref_view_strategy not in REF_VIEW_STRATEGIES:
            raise ConfigError(f"ref_view_strategy must be one of {REF_VIEW_STRATEGIES}, got {ref_view_strategy!r}")
        if process_res % preprocess.PATCH_SIZE or process_res <= 0:
            raise ConfigError(f"process_res must be a positive multiple of {preprocess.PATCH_SIZE}, got {process_res}")
        if process_res_method not in preprocess.METHODS:
            raise ConfigError(f"process_res_method must be one of {preprocess.METHODS}, got {process_res_method!r}")
        self.variant = variant
        self.label = label
        self.trained = trained
        self.process_res = process_res
        self.process_res_method = process_res_method
        if mixed_resolution not in preprocess.MIXED_MODES:
            raise ConfigError(f"mixed_resolution must be one of {preprocess.MIXED_MODES}, got {mixed_resolution!r}")
        self.mixed_resolution = mixed_resolution
        self.ref_view_strategy = ref_view_strategy
        self._warned_no_K = False
        # what it runs on (backends set their own when they resolve it; engines.resolve_settings is the table)
        self.runs_on = EngineSettings(self.backend, "cpu", "fp32")
        self.metric_source = "nested"  # what a DepthKind.METRIC variant's metres come from
        self.align_with_camera_K = False  # nested alignment: the network's intrinsics, as upstream

    def _forward(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on ``feeds``; return its outputs by graph name, without the batch axis.

        Feeds: ``images`` (1, N, 3, H, W) float32, optional ``extrinsics`` (1, N, 4, 4), ``intrinsics`` (1, N, 3, 3).
        """
        raise NotImplementedError

    def forward(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The backend's raw forward (``_forward``): graph feeds in, graph outputs without the batch axis out.

        No pre- or post-processing: what an engine built from others (the metric pair) runs on each of them.
        """
        return self._forward(feeds)

    def health(self) -> tuple[bool, dict[str, str]]:
        """Whether the engine can run sets now, and what /diagnostics should show about it (device, precision)."""
        return True, {"device": self.runs_on.device, "precision": self.runs_on.precision}

    def prepare_ahead(self, shapes: Sequence[tuple[int, bool]], hw: tuple[int, int]) -> None:
        """Get ready for sets of these (views, conditioned) at network size ``hw``; any-N engines need nothing."""

    def describe(self) -> str:
        """'<backend> (device <device>, precision <precision>)', for the start-up line."""
        s = self.runs_on
        return f"{s.backend} (device {s.device}, precision {s.precision})"

    def infer(self, batch: FrameBatch) -> Prediction:
        """One forward over all views of ``batch``; the Prediction carries its stage times (``timing_s``)."""
        return self.run_batch(self.prepare_batch(batch))

    def prepare_batch(self, batch: FrameBatch) -> PreparedBatch:
        """Preprocess ``batch`` to the network size; its intrinsics mapped there (NaN where unknown)."""
        t0 = time.perf_counter()
        x, plans, rgb_proc = preprocess.preprocess_batch(batch.images_rgb, self.process_res, self.process_res_method,
                                                         self.mixed_resolution)
        K_proc = None
        if batch.K_cam is not None:  # a view without K keeps its NaN matrix
            K_proc = np.stack([preprocess.K_cam_to_proc(K, p) if np.isfinite(K).all() else np.full((3, 3), np.nan)
                               for K, p in zip(batch.K_cam, plans)])
        T = None if batch.T_cam_world is None else np.asarray(batch.T_cam_world, dtype=np.float64)
        return PreparedBatch(x, K_proc, T, rgb_proc, time.perf_counter() - t0, batch.view_ids)

    def run_batch(self, prepared: PreparedBatch) -> Prediction:
        """The forward and post-processing of a prepared batch (every view, appended ones included)."""
        t1 = time.perf_counter()
        K_proc, T_in = prepared.K_proc, prepared.T_cam_world
        cond = None
        if T_in is not None and self.variant.has_pose:
            cond = _normalize_poses(T_in)
        elif T_in is not None:
            _LOG.debug("%s takes no pose conditioning; ignoring T_cam_world", self.variant.name)
        feeds = {IN_IMAGES: prepared.images_chw[None]}
        if cond is not None and K_proc is not None:  # FrameBatch guarantees K with poses
            feeds[IN_EXTRINSICS] = cond[0][None].astype(np.float32)
            feeds[IN_INTRINSICS] = K_proc[None].astype(np.float32)
        out = self._forward(feeds)
        t2 = time.perf_counter()
        pred = self._postprocess(out, K_proc, T_in if cond is not None else None, cond)
        timing = {"preprocess": prepared.preprocess_s, "forward": t2 - t1,
                  "postprocess": time.perf_counter() - t2}
        return dataclasses.replace(pred, rgb_proc=prepared.rgb_proc, timing_s=timing)

    def _postprocess(self, out: dict[str, np.ndarray], K_proc: np.ndarray | None, T_in: np.ndarray | None,
                     cond: tuple[np.ndarray, float] | None) -> Prediction:
        depth = out["depth"].astype(np.float32)
        conf = out.get("depth_conf")
        n = depth.shape[0]
        scale = np.ones(n, dtype=np.float64)  # applied inside the nested alignment
        factor = np.ones(n, dtype=np.float64)  # applied below: known-pose units, focal rule
        T_cam_world = _to_4x4(out["extrinsics_out"]) if "extrinsics_out" in out else None
        is_metric = self.variant.depth_kind is DepthKind.METRIC
        # Metric scale of the set (see da3_ros.core.metric_scale): its source and the scale fitted on this set
        source, raw = (self.metric_source, float("nan")) if is_metric else ("none", float("nan"))
        sky = out.get("sky")
        if "metric_depth" in out and conf is not None and sky is not None:  # nested / pair: align (outside the graph)
            # The pair uses the cameras' focal when camera_info gives it; upstream's nested model its own estimate.
            K_align = (_fill_unknown_K(K_proc, out["intrinsics_out"]) if self.align_with_camera_K
                       else out["intrinsics_out"])
            depth, conf, T3, s = postprocess.align_nested(depth, conf, _to_4x4(out["extrinsics_out"]),
                                                           np.asarray(K_align, dtype=np.float64),
                                                           out["metric_depth"], sky)
            T_cam_world, is_metric, raw = T3, bool(np.isfinite(s)), s
            sky = sky if self.variant.has_sky else None
            scale[:] = s if np.isfinite(s) else 1.0
        elif sky is not None:
            depth = postprocess.fill_sky(depth, sky)
        if T_in is not None and cond is not None:
            # Conditioned on known poses: report those poses, and bring depth into their units (metres: a
            # calibrated rig of two or more cameras needs no metric model at all).
            T_norm, unit = cond
            factor[:] = unit / _pose_spread_ratio(T_cam_world, T_norm)
            T_cam_world = np.asarray(T_in, dtype=np.float64)
            if n >= 2:
                source, raw, is_metric = "rig", float(factor[0] * scale[0]), True
        known = np.zeros(n, bool) if K_proc is None else np.isfinite(K_proc).all(axis=(1, 2))
        if self.variant.depth_kind is DepthKind.METRIC_FOCAL:
            if not known.all() and not self._warned_no_K:  # once: a node without camera_info says it every set
                _LOG.warning("%s needs a focal length for metres (camera_info, or the camera's hfov_deg); the "
                             "depth of views without one stays relative", self.variant.name)
                self._warned_no_K = True
            if known.any() and K_proc is not None:  # per view: the focal rule (depth_scale); metric if all have it
                factor[known] *= 0.5 * (K_proc[known, 0, 0] + K_proc[known, 1, 1]) / METRIC_CANONICAL_FOCAL_PX
                is_metric, source, raw = bool(known.all()), "metric_model", 1.0
        if not np.all(factor == 1.0):
            depth = depth * factor[:, None, None].astype(np.float32)
        K_model = out.get("intrinsics_out")
        K_source = ("none" if not known.any() and K_model is None else "model" if not known.any()
                    else "camera" if known.all() or K_model is None else "camera+model")
        K_proc = _fill_unknown_K(K_proc, K_model) if K_model is not None else K_proc
        return Prediction(
            depth=depth, is_metric=is_metric, K_proc=K_proc, K_source=K_source,
            confidence=conf, sky_mask=None if sky is None else sky >= SKY_THRESHOLD,
            T_cam_world=T_cam_world, depth_scale=scale * factor, scale_source=source, scale_raw=raw, scale=raw,
        )


def _fill_unknown_K(K_proc: np.ndarray | None, K_model: np.ndarray) -> np.ndarray:
    """Each view's own K where known (finite), else the model's estimate, as (N, 3, 3) float64.

    One camera's missing calibration never replaces the others'.
    """
    K_model = np.asarray(K_model, dtype=np.float64)
    if K_proc is None:
        return K_model.copy()
    known = np.isfinite(K_proc).all(axis=(1, 2))
    return np.where(known[:, None, None], K_proc, K_model)


def _to_4x4(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape[-2:] == (4, 4):
        return T
    bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), T.shape[:-2] + (1, 4))
    return np.concatenate([T, bottom], axis=-2)


def _normalize_poses(T_cam_world: np.ndarray) -> tuple[np.ndarray, float]:
    """Express poses relative to view 0 with unit median camera distance, as the network was trained.

    Returns the normalised world-to-camera poses and the distance unit (input units per normalised unit).
    Unlike upstream, the median is over the non-reference views only, so 2 views give a unit baseline.
    """
    T_rel = T_cam_world @ invert_T(T_cam_world[0])
    centres = invert_T(T_rel)[:, :3, 3]
    dists = np.linalg.norm(centres[1:], axis=1)
    unit = float(np.median(dists)) if dists.size and np.median(dists) > 1e-9 else 1.0
    T_rel = T_rel.copy()
    T_rel[:, :3, 3] /= unit
    return T_rel, unit


def _pose_spread_ratio(T_pred: np.ndarray | None, T_ref: np.ndarray) -> float:
    """Scale of predicted camera centres against reference centres (1 when it cannot be told)."""
    if T_pred is None or len(T_ref) < 2:
        return 1.0
    def spread(T: np.ndarray) -> float:
        c = invert_T(T)[:, :3, 3]
        return float(np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean()))
    ref, pred = spread(T_ref), spread(T_pred)
    return pred / ref if ref > 1e-9 and pred > 1e-9 else 1.0
