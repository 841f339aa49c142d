"""Backends that run exported fixed-shape graphs (ONNX Runtime, TensorRT): one runner per rig shape.

A graph holds N views at one network size, with or without pose-conditioning inputs. The first set of each
shape resolves its graph (given file, cache, or an export in a subprocess) and builds a runner; later sets
reuse it. A rig that loses a camera simply gets the (N-1)-view graph the same way. At most ``MAX_RUNNERS``
are kept (each holds its own copy of the weights): the least recently used one is released. Torch-free.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
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
    """Engine over exported graphs; subclasses implement ``_make_runner(shape)``.

    ``fallbacks``: the shapes a subclass runs another way than asked (TensorRT refused: ONNX Runtime; OpenVINO
    refused: fp32 or ONNX Runtime), and why; said in ``describe()`` and in ``health()`` under ``FALLBACK_KEY``, the way
    running them being ``FALLBACK_RUNS`` and what was refused ``FALLBACK_REFUSED``.
    """

    FALLBACK_KEY, FALLBACK_RUNS, FALLBACK_REFUSED = "fallback", "another way", "refused"

    def __init__(self, model: str, cache_dir: str | None = None, **kwargs: Any) -> None:
        if kwargs.get("ref_view_strategy", "first") != "first":
            raise ConfigError(f"the {self.backend} backend pins view 0 as the reference (ref_view_strategy "
                              f"'first'); upstream's data-dependent strategies need backend torch")
        self.source = OnnxSource(model, ArtifactCache(cache_dir))
        super().__init__(self.source.variant, self.source.label, self.source.trained, **kwargs)
        self._runners: dict[Shape, Runner] = {}
        self._lock = threading.Lock()
        self.fallbacks: dict[Shape, str] = {}

    def describe(self) -> str:
        """The start-up line's backend, plus each shape run another way than asked (``fallbacks``) and why."""
        text = super().describe()
        for (n, hw, _), why in self.fallbacks.items():
            text += f"; {n}-view {hw[1]}x{hw[0]} {self.FALLBACK_RUNS} ({self.FALLBACK_REFUSED}: {why})"
        return text

    def health(self) -> tuple[bool, dict[str, str]]:
        """Device and precision, and ``FALLBACK_KEY`` naming each shape run another way than asked, and why."""
        ok, values = super().health()
        if self.fallbacks:
            values[self.FALLBACK_KEY] = "; ".join(f"{n}-view {hw[1]}x{hw[0]} {self.FALLBACK_RUNS}: {why}"
                                                  for (n, hw, _), why in self.fallbacks.items())
        return ok, values

    def _make_runner(self, shape: Shape) -> Runner:
        raise NotImplementedError

    def _graph_kind(self) -> tuple[str, bool]:
        """(precision, fused attention) of the graphs this backend runs (plain fp32 unless it says otherwise)."""
        return "fp32", False

    def _graph_for(self, shape: Shape, background: bool = False) -> Path:
        """The graph file this backend runs for ``shape`` (resolved, exported if needed; see onnx_for)."""
        n, hw, cond = shape
        return self._graphs_for([n], hw, cond, background)[0]

    def _graphs_for(self, views: list[int], hw: tuple[int, int], conditioned: bool,
                    background: bool = False) -> list[Path]:
        """``_graph_for`` of several view counts at one size: the missing ones exported by one child process."""
        precision, fused = self._graph_kind()
        return self.source.onnx_for_views(views, hw, conditioned, precision, fused, background)

    def prepare(self, n_views: int, hw: tuple[int, int], conditioned: bool = False) -> None:
        """Resolve and load the graph for a shape ahead of the first set (exports / builds it if needed)."""
        self._runner((n_views, (int(hw[0]), int(hw[1])), conditioned))

    def prepare_ahead(self, shapes: Sequence[tuple[int, bool]], hw: tuple[int, int]) -> None:
        """Export the graphs of these (views, conditioned) in the background (a silent camera, a window).

        Only the graph files are made ahead (into the cache), by the process's one ahead worker (``AHEAD``: one
        request at a time, in the order asked; the graphs of one size and conditioning by one export child);
        a runner is built on the first set that needs it. A given .onnx holds exactly its N: a silent camera
        then fails its sets with an error naming the export command.
        """
        if self.source.file is not None:
            return
        size = (int(hw[0]), int(hw[1]))
        AHEAD.put(self, [(int(n), size, bool(cond)) for n, cond in shapes if n >= 1])

    def runner_for(self, shape: Shape) -> Runner:
        """The loaded runner of ``shape`` (exported / built / loaded if needed), for a host that keeps it.

        ``da3-ros serve`` holds one per served shape so that no request ever waits for a load; the engine's own
        sets go through its small LRU of runners (``MAX_RUNNERS``).
        """
        return self._runner(shape)

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


class AheadQueue:
    """The process's graphs to prepare ahead of need: one worker thread, one request at a time, first asked first.

    A request is what one caller asked at once (``put``); its graphs of one size and conditioning are exported
    by one child process, which loads the model once. One request at a time because each export loads its
    model (memory, cores); in order because callers ask for the most urgent first (the temporal window's next
    size before a silent camera's). A shape already queued for that engine is not queued twice.
    """

    THREAD_NAME = "da3_prepare_ahead"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[FixedShapeEngine, list[Shape]]] = []  # requests; the first is being prepared
        self._thread: threading.Thread | None = None

    def put(self, engine: FixedShapeEngine, shapes: list[Shape]) -> None:
        """Queue ``shapes`` of ``engine`` as one request; start the worker if it is not running."""
        with self._lock:
            queued = {s for e, request in self._pending if e is engine for s in request}
            new = [s for s in dict.fromkeys(shapes) if s not in queued]
            if not new:
                return
            self._pending.append((engine, new))
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name=self.THREAD_NAME, daemon=True)
                self._thread.start()

    def pending(self) -> list[tuple[FixedShapeEngine, Shape]]:
        """What is still to be prepared, the request in progress first."""
        with self._lock:
            return [(e, s) for e, request in self._pending for s in request]

    def cancel(self, engine: FixedShapeEngine | None = None) -> None:
        """Forget the queued requests (of ``engine``; all: None); the request in progress goes on to its end."""
        with self._lock:
            self._pending[1:] = [(e, r) for e, r in self._pending[1:] if engine is not None and e is not engine]

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                engine, request = self._pending[0]
            groups: dict[tuple[tuple[int, int], bool], list[int]] = {}  # in the order asked
            for n, hw, cond in request:
                groups.setdefault((hw, cond), []).append(n)
            for (hw, cond), views in groups.items():
                try:
                    engine._graphs_for(views, hw, cond, background=True)
                except Exception as exc:  # a background nicety: the set that needs it will say what is wrong
                    _LOG.warning("could not prepare the %s-view graphs ahead: %s", "/".join(map(str, views)), exc)
            with self._lock:
                self._pending.pop(0)


AHEAD = AheadQueue()
