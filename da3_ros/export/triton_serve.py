"""``da3-ros serve``: a Triton Inference Server on this machine hosting da3_ros's own graph engine (pytriton).

For trying the ``triton`` backend out and for the tests: pytriton starts the real ``tritonserver`` binary and
binds one model whose forward is the local ONNX Runtime (or TensorRT) engine's raw graph.

It serves exactly the shapes it was started with, all loaded (exported into the cache when missing) BEFORE
it listens: a checkpoint spec serves the given view counts at one network size, pose-conditioned or not as
the node sends them (``rig_shapes``: ``--conditioned`` conditions every count of 2 views or more; 1 view is
always plain, since a single camera is never conditioned); a ``.onnx`` from ``da3-ros export`` serves its own
shape. A request of another shape that the model's config lets through is refused at once with an error
naming the ``serve`` options for it; nothing is ever exported inside a request (an export takes 10-20 s and
would block the rig). The config says the shapes (views -1 when several counts are served; the conditioning
inputs optional when some counts are plain): Triton itself refuses raw requests outside it with its own
message, and the ``triton`` backend checks every set against it before sending.

It listens on ``bind`` (default 127.0.0.1: gRPC, HTTP and metrics, with the statistics endpoint open for
monitoring); SIGTERM stops it as SIGINT does: tritonserver stopped, its workspace removed, exit 0.
Production servers load the model repository that ``da3-ros export --triton-repo`` writes instead.
"""
from __future__ import annotations

import logging
import os
import signal
import sysconfig
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from da3_ros.engines.base import IN_EXTRINSICS, IN_IMAGES, IN_INTRINSICS, graph_outputs
from da3_ros.engines.fixed_shape import FixedShapeEngine, Runner, Shape
from da3_ros.engines.graph_io import describe_shape
from da3_ros.engines.triton_engine import UNSERVED_MARK, serve_hint

_LOG = logging.getLogger(__name__)


class ServeShapeError(ValueError):
    """The shapes asked of ``serve`` cannot be served as given; the message names what to pass instead."""


def rig_shapes(views: Sequence[int], hw: tuple[int, int], conditioned: bool) -> list[Shape]:
    """The shapes a rig sends for these view counts: conditioned at 2 views or more, 1 view always plain.

    The node's rule (``Rig.takes_conditioning``): a lone camera (the rig's, or what a silent camera leaves of
    a 2-camera rig) is never pose-conditioned, so ``--conditioned --also-views 1`` serves a plain 1-view graph.
    """
    return [(n, hw, conditioned and n >= 2) for n in views]


def served_shapes(engine: FixedShapeEngine, shapes: Sequence[Shape]) -> list[Shape]:
    """The shapes ``serve`` answers: a graph file's own, else ``shapes`` (one network size)."""
    meta = engine.source.meta if engine.source.file is not None else None
    if meta is not None:
        own = (int(meta["n_views"]), (int(meta["height"]), int(meta["width"])), bool(meta["conditioned"]))
        if shapes and list(shapes) != [own]:
            raise ServeShapeError(f"{engine.source.file} holds {describe_shape(own)} only; leave out the rig options "
                             "or serve a checkpoint")
        return [own]
    shapes = list(dict.fromkeys(shapes))
    if not shapes:
        raise ServeShapeError("give the rig shape to serve (--views N --height H --width W, or --camera-size): graphs "
                         "are exported before serving, never inside a request")
    if len({hw for _, hw, _ in shapes}) != 1:
        raise ServeShapeError(f"serve takes one network size (view counts may differ), got "
                              f"{[describe_shape(s) for s in shapes]}")
    if len(set(shapes)) != len({n for n, _, _ in shapes}):
        raise ServeShapeError(f"serve takes one kind per view count, got {[describe_shape(s) for s in shapes]}")
    return shapes


def tensor_specs(engine: FixedShapeEngine, shapes: Sequence[Shape]) -> tuple[list[tuple[str, tuple, bool]], list[str]]:
    """Inputs as (name, shape with -1 for any, optional) and output names of the model serving ``shapes``.

    The pose-conditioning inputs are there when some shape is conditioned, optional when another is plain.
    """
    views = {n for n, _, _ in shapes}
    n = views.pop() if len(views) == 1 else -1
    (h, w), kinds = shapes[0][1], {cond for _, _, cond in shapes}
    inputs: list[tuple[str, tuple[int, ...], bool]] = [(IN_IMAGES, (1, n, 3, h, w), False)]
    if True in kinds:
        optional = False in kinds
        inputs += [(IN_EXTRINSICS, (1, n, 4, 4), optional), (IN_INTRINSICS, (1, n, 3, 3), optional)]
    return inputs, graph_outputs(engine.variant)


def run_served(runners: dict[Shape, Runner], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One request: the graph's outputs for a served shape; ValueError naming the fix for any other shape."""
    images = feeds[IN_IMAGES]
    if images.ndim != 5 or images.shape[0] != 1 or images.shape[2] != 3:
        raise ValueError(f"images must be (1, N, 3, H, W) float32, got {images.shape}")
    shape = (images.shape[1], (images.shape[3], images.shape[4]), IN_EXTRINSICS in feeds)
    runner = runners.get(shape)
    if runner is None:  # refuse at once: exporting here would block the rig for many seconds
        served = "; ".join(map(describe_shape, runners))
        raise ValueError(f"{UNSERVED_MARK} {describe_shape(shape)} (it serves {served}). " + serve_hint(feeds))
    return runner.run(feeds)


def serve(engine: FixedShapeEngine, name: str = "da3", grpc_port: int = 8001, http_port: int = 8000,
          metrics_port: int = 8002, prepare: Sequence[Shape] = (), on_ready: Callable[[], None] | None = None,
          bind: str = "127.0.0.1") -> None:
    """Serve ``engine`` as model ``name`` on ``bind`` for the shapes ``prepare`` until SIGINT or SIGTERM."""
    shapes = served_shapes(engine, prepare)
    stop_signals = _stop_on_signals()
    try:
        # Export / build / load before the first request, which has a deadline. Held here, not in the engine's
        # small LRU of runners, so no served shape is ever reloaded inside a request.
        runners = {shape: engine.runner_for(shape) for shape in shapes}
        _serve(engine, runners, name, (grpc_port, http_port, metrics_port), bind, on_ready)
    except KeyboardInterrupt:  # a signal before pytriton's loop took over; Triton's context has stopped it
        _LOG.info("stopped by a signal")
    finally:
        for sig, handler in stop_signals.items():
            signal.signal(sig, handler)


def _stop_on_signals() -> dict[int, Any]:
    """SIGINT and SIGTERM -> KeyboardInterrupt once (pytriton's clean stop); later ones wait for that stop."""
    def interrupt(signum, _frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # also when started with SIGINT ignored (a background job of a shell): stopping must always work
    return {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}


def _serve(engine: FixedShapeEngine, runners: dict[Shape, Runner], name: str, ports: tuple[int, int, int], bind: str,
           on_ready: Callable[[], None] | None) -> None:
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

    # The Python-backend stub that pytriton starts links libpython3.11 by name: make it the one running us,
    # not another 3.11 build on the system (else models fail to load with an RLock attribute error).
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        os.environ["LD_LIBRARY_PATH"] = ":".join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
    shapes = list(runners)
    inputs, outputs = tensor_specs(engine, shapes)

    def infer(requests):
        return [run_served(runners, {k: np.asarray(r[k], dtype=np.float32) for k in r}) for r in requests]

    grpc_port, http_port, metrics_port = ports
    config = TritonConfig(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port, log_verbose=0,
                          grpc_address=bind, http_address=bind, metrics_address=bind)
    # pytriton guards some endpoints with a token it makes up; statistics (per-model counts and times, read
    # only) stay open for monitoring and the benchmark, model loading and shared memory stay guarded.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(name, infer,
                    inputs=[Tensor(name=k, dtype=np.float32, shape=s, optional=o) for k, s, o in inputs],
                    outputs=[Tensor(name=k, dtype=np.float32, shape=(-1,) * 4) for k in outputs],
                    config=ModelConfig(batching=False))
        _LOG.info("serving %s as model %r for %s: gRPC %s:%d, HTTP %s:%d, metrics %s:%d", engine.label, name,
                  "; ".join(map(describe_shape, shapes)), bind, grpc_port, bind, http_port, bind, metrics_port)
        if on_ready is not None:
            on_ready()
        triton.serve()  # returns after SIGINT/SIGTERM (KeyboardInterrupt, caught there) with Triton stopped
