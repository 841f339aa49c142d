"""Backends that run exported fixed-shape graphs (ONNX Runtime, TensorRT): one runner per rig shape.

A graph holds N views at one network size, with or without pose-conditioning inputs. The first set of each
shape resolves its graph (given file, cache, or an export in a subprocess) and builds a runner; later sets
reuse it. A rig that loses a camera simply gets the (N-1)-view graph the same way. At most ``MAX_RUNNERS``
are kept (each holds its own copy of the weights): the least recently used one is released. Torch-free.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from da3_ros.engines.base import IN_EXTRINSICS, IN_IMAGES, Engine
from da3_ros.engines.cache import ArtifactCache
from da3_ros.engines.onnx_source import OnnxSource
from da3_ros.core.errors import ConfigError

Shape = tuple[int, tuple[int, int], bool]  # (views, (H, W), pose-conditioned)
_LOG = logging.getLogger(__name__)
MAX_RUNNERS = 2  # e.g. the full rig and the rig minus one camera


class Runner(Protocol):
    """Runs one fixed-shape graph: float32 feeds by input name -> outputs by name (with the batch axis)."""

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class FixedShapeEngine(Engine):
    """Engine over exported graphs; subclasses implement ``_make_runner(shape)``."""

    def __init__(self, model: str, cache_dir: str | None = None, **kwargs: Any) -> None:
        if kwargs.get("ref_view_strategy", "first") != "first":
            raise ConfigError(f"the {self.backend} backend pins view 0 as the reference (ref_view_strategy "
                              f"'first'); upstream's data-dependent strategies need backend torch")
        self.source = OnnxSource(model, ArtifactCache(cache_dir))
        super().__init__(self.source.variant, self.source.label, self.source.trained, **kwargs)
        self._runners: dict[Shape, Runner] = {}
        self._lock = threading.Lock()
        self._ahead_lock = threading.Lock()

    def _make_runner(self, shape: Shape) -> Runner:
        raise NotImplementedError

    def _graph_for(self, shape: Shape, background: bool = False) -> Path:
        """The graph file this backend runs for ``shape`` (resolved, exported if needed; see onnx_for)."""
        n, hw, cond = shape
        return self.source.onnx_for(n, hw, cond, background=background)

    def prepare(self, n_views: int, hw: tuple[int, int], conditioned: bool = False) -> None:
        """Resolve and load the graph for a shape ahead of the first set (exports / builds it if needed)."""
        self._runner((n_views, (int(hw[0]), int(hw[1])), conditioned))

    def prepare_ahead(self, n_views: int, hw: tuple[int, int], conditioned: bool) -> None:
        """Export the graph of ``n_views`` views in the background (e.g. for when a camera goes silent).

        Only the graph file is made ahead (in a child process, into the cache); its runner is built on the
        first set that needs it. A given .onnx holds exactly its N: a silent camera then fails its sets with
        an error naming the export command.
        """
        source = self.source
        if n_views < 1 or source.file is not None:
            return

        def export() -> None:
            try:
                with self._ahead_lock:  # one export at a time (each loads the model: memory, cores)
                    self._graph_for((n_views, (int(hw[0]), int(hw[1])), conditioned), background=True)
            except Exception as exc:  # a background nicety: the set that needs it will say what is wrong
                _LOG.warning("could not prepare the %d-view graph ahead: %s", n_views, exc)

        threading.Thread(target=export, name="da3_prepare_ahead", daemon=True).start()

    def _runner(self, shape: Shape) -> Runner:
        with self._lock:
            runner = self._runners.pop(shape, None)
            if runner is None:
                while len(self._runners) >= MAX_RUNNERS:  # release the least recently used first
                    self._runners.pop(next(iter(self._runners)))
                runner = self._make_runner(shape)
            self._runners[shape] = runner  # (re)inserted last: dicts keep insertion order
            return runner

    def run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The raw graph: feeds by input name (batch axis first) -> outputs by name (with the batch axis).

        What an inference server hosting this engine runs (``da3-ros serve``); shapes pick the runner.
        """
        images = feeds[IN_IMAGES]
        if images.ndim != 5 or images.shape[0] != 1 or images.shape[2] != 3:
            raise ValueError(f"images must be (1, N, 3, H, W) float32, got {images.shape}")
        _, n, _, h, w = images.shape
        return self._runner((n, (h, w), IN_EXTRINSICS in feeds)).run(feeds)

    def _forward(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.asarray(v[0], dtype=np.float32) for name, v in self.run_graph(feeds).items()}
