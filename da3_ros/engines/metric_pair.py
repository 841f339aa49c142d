"""The nested pair as two models: any any-view model (small/base/large/giant) + DA3METRIC-LARGE.

What upstream's DA3NESTED-GIANT-LARGE does inside one network, here with two engines on the same preprocessed
views (each on any backend): the any-view model gives depth, confidence and poses; the metric model's depth,
scaled with the focal length at the network resolution (the cameras' when camera_info gives it, else the
any-view model's estimate), gives metres; one robust scale over confident, non-sky pixels maps the first onto
the second and is applied to depth and pose translations (engines.postprocess.align_nested). A cheaper and
license-clean pairing: DA3-SMALL/BASE/LARGE and DA3METRIC-LARGE are Apache-2.0, the nested checkpoint is
CC BY-NC. The metric model costs a large forward per view, so it can run on every k-th set only
(``every_n_sets``); the sets in between carry no measured scale and take the filtered one
(da3_ros.core.metric_scale), and each view's last sky, so that the sky mask, +Inf sky and cloud.drop_sky do not
come and go between sets, whatever the set's view count (a temporal window filling N -> N + K, a silent camera):
a view whose network input was in the last forward (a temporal keyframe is an exact copy of an earlier view)
keeps its own sky; a camera's current view takes that camera's last sky (``FrameBatch.view_ids``; views not
named are known by their place in the batch); a view seen on no metric set has no sky (probability 0). Torch-free
as far as its two engines are.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from da3_ros.core.engine_api import PreparedBatch
from da3_ros.core.prediction import Prediction
from da3_ros.engines.base import IN_IMAGES, Engine
from da3_ros.core.errors import ConfigError
from da3_ros.models.registry import DepthKind

METRIC_PARTNER = "da3metric-large"


class MetricPairEngine(Engine):
    """``main`` (any-view) + ``metric`` (DA3METRIC-LARGE) as one engine whose depth and poses are in metres."""

    def __init__(self, main: Engine, metric: Engine, every_n_sets: int = 1):
        if not main.variant.has_pose or main.variant.depth_kind is not DepthKind.RELATIVE:
            raise ConfigError(f"metric_model pairs an any-view model (da3-small/base/large/giant) with "
                              f"{METRIC_PARTNER}; model is {main.variant.name}")
        if metric.variant.name != METRIC_PARTNER:
            raise ConfigError(f"metric_model must be a {METRIC_PARTNER} checkpoint, got {metric.variant.name}")
        if every_n_sets < 1:
            raise ConfigError(f"metric.every_n_sets must be >= 1, got {every_n_sets}")
        if metric.process_res != main.process_res or metric.process_res_method != main.process_res_method:
            raise ConfigError("the paired models must share process_res and process_res_method")
        variant = dataclasses.replace(main.variant, depth_kind=DepthKind.METRIC, has_sky=True)
        super().__init__(variant, f"{main.label} + {metric.label}", main.trained and metric.trained,
                         process_res=main.process_res, process_res_method=main.process_res_method,
                         ref_view_strategy=main.ref_view_strategy, mixed_resolution=main.mixed_resolution)
        self.backend = main.backend
        self.runs_on = main.runs_on  # both built from the same backend, device and precision
        self.main, self.metric = main, metric
        self.every_n_sets = every_n_sets
        self.metric_source = "metric_model"
        self.align_with_camera_K = True
        self.sets = 0  # forwards so far; the metric model runs on sets 0, k, 2k, ...
        self._sky_by_camera: dict[str, np.ndarray] = {}  # each camera's last sky probabilities, (H, W)
        self._sky_by_input: dict[bytes, np.ndarray] = {}  # the last forward's skies by the view's network input
        self._view_ids: tuple[str | None, ...] | None = None  # the views of the batch being run

    def run_batch(self, prepared: PreparedBatch) -> Prediction:
        """As every engine; the batch's view ids say whose last sky a view takes on a set without the metric model."""
        self._view_ids = prepared.view_ids
        try:
            return super().run_batch(prepared)
        finally:
            self._view_ids = None

    def _forward(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(self.main.forward(feeds))
        images = feeds[IN_IMAGES][0]
        ids = self._view_ids or tuple(f"#{i}" for i in range(len(images)))  # not named: by place
        # each view's network input, to know a keyframe again; only where a later set may reuse a sky
        keys = ([hashlib.blake2b(np.ascontiguousarray(v).tobytes(), digest_size=16).digest() for v in images]
                if self.every_n_sets > 1 else [])
        sky: np.ndarray | None
        if self.sets % self.every_n_sets == 0:
            metric = self.metric.forward({IN_IMAGES: feeds[IN_IMAGES]})  # mono: no pose conditioning
            out["metric_depth"], sky = metric["depth"], metric["sky"]
        else:  # no metric forward: each view's last sky, filled and masked as on a metric set (no flicker)
            sky = self._last_skies(keys, ids, out["depth"].shape)
        if sky is not None:
            out["sky"] = sky
            self._sky_by_input = dict(zip(keys, sky))
            self._sky_by_camera.update((i, s) for i, s in zip(ids, sky) if i is not None)
        self.sets += 1
        return out

    def _last_skies(self, keys: list[bytes], ids: tuple[str | None, ...], shape: tuple[int, ...]) -> np.ndarray | None:
        """(V, H, W) skies for a set without the metric model (see the module); None when no view has one."""
        found = [self._sky_by_input.get(k) if k in self._sky_by_input else
                 self._sky_by_camera.get(i) if i is not None else None for k, i in zip(keys, ids)]
        found = [s if s is not None and s.shape == tuple(shape[1:]) else None for s in found]
        if all(s is None for s in found):
            return None
        return np.stack([np.zeros(shape[1:], np.float32) if s is None else s for s in found])

    def prepare_ahead(self, shapes: Sequence[tuple[int, bool]], hw: tuple[int, int]) -> None:
        """Both engines get ready for sets of these views: the metric model's graphs are plain (mono)."""
        self.main.prepare_ahead(shapes, hw)
        self.metric.prepare_ahead([(n, False) for n, _ in shapes], hw)

    def health(self) -> tuple[bool, dict[str, str]]:
        """Both engines' health (a remote one may be down)."""
        ok_main, main = self.main.health()
        ok_metric, metric = self.metric.health()
        return ok_main and ok_metric, {**main, **{f"metric.{k}": v for k, v in metric.items()}}
