"""Inference engines: one interface (``Engine.infer``), one backend per module.

Torch is imported only by the torch backend and the exporter, so ``onnxruntime`` processes never load it.
"""
from __future__ import annotations

import importlib.util
import logging

from da3_ros.engines.base import BackendUnavailable, Engine, EngineUnavailable, FrameBatch
from da3_ros.errors import ConfigError

__all__ = ["BACKENDS", "BackendUnavailable", "Engine", "EngineUnavailable", "FrameBatch", "create_engine",
           "resolve_backend"]
_LOG = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "triton")


def resolve_backend(backend: str) -> str:
    """``auto``: TensorRT when it imports and a CUDA device is present, else ONNX Runtime, else torch.

    ``triton`` (a remote server) is never chosen automatically: it needs a server address.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    from da3_ros.engines.tensorrt_engine import tensorrt_status

    ok, why = tensorrt_status()
    if ok:
        return "tensorrt"
    _LOG.info("backend auto: not TensorRT (%s)", why)
    return "onnxruntime" if importlib.util.find_spec("onnxruntime") else "torch"


def create_engine(backend: str, model: str, *, device: str = "cpu", precision: str = "auto", threads: int = 0,
                  cache_dir: str | None = None, triton=None, metric_model: str = "", metric_every_n_sets: int = 1,
                  **kwargs) -> Engine:
    """Build the engine for ``backend`` around a model spec (checkpoint spec, or a .onnx for graph backends).

    ``triton``: the server settings (engines.triton_engine.TritonSettings) for backend ``triton``.
    ``metric_model``: a DA3METRIC-LARGE spec to pair with an any-view ``model`` for metres (engines.metric_pair;
    on triton it is served as ``<triton.model>_metric``). ``kwargs`` go to Engine (process_res,
    process_res_method, ref_view_strategy).
    """
    if metric_model:
        import dataclasses

        from da3_ros.engines.metric_pair import MetricPairEngine

        common = dict(device=device, precision=precision, threads=threads, cache_dir=cache_dir, **kwargs)
        metric_triton = None
        if triton is not None:
            metric_triton = dataclasses.replace(triton, model_name=f"{triton.model_name}_metric")
        return MetricPairEngine(create_engine(backend, model, triton=triton, **common),
                                create_engine(backend, metric_model, triton=metric_triton, **common),
                                metric_every_n_sets)
    backend = resolve_backend(backend)
    if backend == "triton":
        from da3_ros.engines.triton_engine import TritonEngine, TritonSettings

        return TritonEngine(model, triton or TritonSettings(), **kwargs)
    if backend == "torch":
        if model.endswith(".onnx"):
            raise ConfigError(f"backend torch needs a checkpoint, not the ONNX graph {model}; use backend onnxruntime")
        if importlib.util.find_spec("torch") is None:
            raise BackendUnavailable("backend torch needs PyTorch: `pip install torch` (or use backend onnxruntime)")
        from da3_ros.engines.torch_engine import TorchEngine
        from da3_ros.models import load_model

        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        return TorchEngine(load_model(model, device=device), precision=precision, **kwargs)
    if backend == "onnxruntime":
        from da3_ros.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(model, threads=threads, cache_dir=cache_dir, **kwargs)
    from da3_ros.engines.tensorrt_engine import TensorRTEngine

    trt_precision = "fp32" if precision == "fp32" else "fp16"
    return TensorRTEngine(model, precision=trt_precision, cache_dir=cache_dir, **kwargs)
