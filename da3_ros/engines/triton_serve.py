"""``da3-ros serve``: a Triton Inference Server on this machine hosting da3_ros's own graph engine (pytriton).

For trying the ``triton`` backend out and for the tests: pytriton starts the real ``tritonserver`` binary and
binds one model whose forward is the local ONNX Runtime (or TensorRT) engine's raw graph. A checkpoint spec
serves any rig shape (graphs are exported into the cache per shape; ``prepare`` does it before serving); a
``.onnx`` from ``da3-ros export`` serves exactly its shape. Production servers load the model repository
that ``da3-ros export --triton-repo`` writes instead.
"""
from __future__ import annotations

import logging
import os
import sysconfig
from collections.abc import Sequence

import numpy as np

from da3_ros.engines.base import IN_EXTRINSICS, IN_IMAGES, IN_INTRINSICS, graph_outputs
from da3_ros.engines.fixed_shape import FixedShapeEngine

_LOG = logging.getLogger(__name__)


def tensor_specs(engine: FixedShapeEngine) -> tuple[list[tuple[str, tuple[int, ...], bool]], list[str]]:
    """Inputs as (name, shape with -1 for any, optional) and output names of the model the engine serves."""
    meta = engine.source.meta if engine.source.file is not None else None
    n, h, w = (meta["n_views"], meta["height"], meta["width"]) if meta else (-1, -1, -1)
    inputs: list[tuple[str, tuple[int, ...], bool]] = [(IN_IMAGES, (1, n, 3, h, w), False)]
    if engine.variant.has_pose and (meta is None or meta["conditioned"]):
        optional = meta is None  # a fixed conditioned graph needs them; a spec serves both kinds of rig
        inputs += [(IN_EXTRINSICS, (1, n, 4, 4), optional), (IN_INTRINSICS, (1, n, 3, 3), optional)]
    return inputs, graph_outputs(engine.variant)


def serve(engine: FixedShapeEngine, name: str = "da3", grpc_port: int = 8001, http_port: int = 8000,
          metrics_port: int = 8002, prepare: Sequence[tuple[int, tuple[int, int], bool]] = (),
          on_ready=None) -> None:
    """Serve ``engine`` as model ``name`` until interrupted (Ctrl-C / SIGTERM)."""
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

    for n, hw, cond in prepare:  # export / build before the first request, which has a deadline
        engine.prepare(n, hw, cond)
    # The Python-backend stub that pytriton starts links libpython3.11 by name: make it the one running us,
    # not another 3.11 build on the system (else models fail to load with an RLock attribute error).
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        os.environ["LD_LIBRARY_PATH"] = ":".join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
    inputs, outputs = tensor_specs(engine)

    def infer(requests):
        return [engine.run_graph({k: np.asarray(r[k], dtype=np.float32) for k in r}) for r in requests]

    config = TritonConfig(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port, log_verbose=0)
    # pytriton guards some endpoints with a token it makes up; statistics (per-model counts and times, read
    # only) stay open for monitoring and the benchmark, model loading and shared memory stay guarded.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(name, infer,
                    inputs=[Tensor(name=k, dtype=np.float32, shape=s, optional=o) for k, s, o in inputs],
                    outputs=[Tensor(name=k, dtype=np.float32, shape=(-1,) * 4) for k in outputs],
                    config=ModelConfig(batching=False))
        _LOG.info("serving %s as model %r: gRPC localhost:%d, HTTP localhost:%d, metrics localhost:%d",
                  engine.label, name, grpc_port, http_port, metrics_port)
        if on_ready is not None:
            on_ready()
        triton.serve()
