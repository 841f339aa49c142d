"""Inference engines: one interface (``Engine.infer``), one backend per module.

Torch is imported only by the torch backend and the exporter, so ``onnxruntime`` processes never load it.
Which backend, device and precision an engine runs on is ``settings``' table (re-exported here).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from da3_ros.engines.base import (BackendUnavailable, Engine, EngineConfigError, EngineSettings, EngineUnavailable,
                                  FrameBatch)
from da3_ros.engines.settings import (BACKENDS, PRECISIONS, Hardware, graph_file_settings, resolve_backend,
                                      resolve_settings)
from da3_ros.core.errors import ConfigError
from da3_ros.core.params import Backend

__all__ = ["BACKENDS", "PRECISIONS", "BackendUnavailable", "Engine", "EngineConfigError", "EngineSettings",
           "EngineUnavailable", "FrameBatch", "Hardware", "create_engine", "create_fixed_shape_engine",
           "engine_from_config", "resolve_backend", "resolve_settings"]
if TYPE_CHECKING:
    from da3_ros.core.config import DepthConfig
    from da3_ros.engines.fixed_shape import FixedShapeEngine



def create_engine(backend: str, model: str, *, device: str = "auto", precision: str = "auto", threads: int = 0,
                  cache_dir: str | None = None, triton: Any = None, metric_model: str = "",
                  metric_every_n_sets: int = 1, **kwargs: Any) -> Engine:
    """Build the engine for ``backend`` around a model spec (checkpoint spec, or a .onnx for graph backends).

    ``device`` and ``precision`` are resolved by ``resolve_settings`` (a combination that cannot hold raises
    EngineConfigError before anything loads); the engine's ``settings`` say what it runs on.
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
    settings = resolve_settings(backend, device, precision)
    if model.endswith(".onnx"):
        settings = graph_file_settings(settings, model, precision, device, backend)
    if settings.backend == "tensorrt":  # auto: a shape TensorRT refuses runs on ONNX Runtime instead
        kwargs["fallback"] = backend == "auto"
    if settings.backend == "openvino":  # what a compile the gate refuses runs as (OpenVinoEngine)
        kwargs["fallback"] = "onnxruntime" if backend == "auto" else "fp32" if precision == "auto" else ""
    engine = _build(settings, model, threads, cache_dir, triton, **kwargs)
    engine.runs_on = settings
    return engine


def create_fixed_shape_engine(backend: str, model: str, **kwargs: Any) -> FixedShapeEngine:
    """``create_engine`` for a backend that runs exported fixed-shape graphs (onnxruntime, tensorrt, openvino).

    What ``da3-ros build-engine`` prepares and ``da3-ros serve`` hosts: it answers ``prepare`` (the graph and
    runner of a shape, ahead) and holds its ``source`` (checkpoint or graph file, artifact cache), which the
    core's DepthEngine does not declare. EngineConfigError for a backend that runs no such graph.
    """
    from da3_ros.engines.fixed_shape import FixedShapeEngine

    engine = create_engine(backend, model, **kwargs)
    if not isinstance(engine, FixedShapeEngine):
        raise EngineConfigError(f"backend {backend!r} ({engine.backend}) runs no exported fixed-shape graph; "
                                "use backend onnxruntime, tensorrt or openvino")
    return engine


def engine_from_config(cfg: DepthConfig) -> Engine:
    """The engine a validated config names (``model``, ``backend``, ``device``, ``precision``, ``triton.*``...)."""
    from da3_ros.engines.triton_engine import triton_settings

    v = cfg.value
    return create_engine(v("backend"), v("model"), device=v("device"), precision=v("precision"),
                         threads=v("threads"), cache_dir=v("engine_cache_dir") or None,
                         process_res=v("process_res"), process_res_method=v("process_res_method"),
                         ref_view_strategy="first", mixed_resolution=v("mixed_resolution"),
                         triton=triton_settings(v) if v("backend") == Backend.TRITON.value else None,
                         metric_model=v("metric_model"), metric_every_n_sets=v("metric.every_n_sets"))


def _build_triton(settings: EngineSettings, model: str, threads: int, cache_dir: str | None, triton: Any,
                  **kwargs: Any) -> Engine:
    from da3_ros.engines.triton_engine import TritonEngine, TritonSettings

    return TritonEngine(model, triton or TritonSettings(), **kwargs)


def _build_torch(settings: EngineSettings, model: str, threads: int, cache_dir: str | None, triton: Any,
                 **kwargs: Any) -> Engine:
    if model.endswith(".onnx"):
        raise ConfigError(f"backend torch needs a checkpoint, not the ONNX graph {model}; use backend onnxruntime")
    if importlib.util.find_spec("torch") is None:
        raise BackendUnavailable("backend torch needs PyTorch: `pip install torch` (or use backend onnxruntime)")
    from da3_ros.engines.torch_engine import TorchEngine
    from da3_ros.models import load_model

    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    return TorchEngine(load_model(model, device=settings.device), precision=settings.precision, **kwargs)


def _build_onnxruntime(settings: EngineSettings, model: str, threads: int, cache_dir: str | None, triton: Any,
                       **kwargs: Any) -> Engine:
    from da3_ros.engines.onnxruntime_engine import OnnxRuntimeEngine, choose_providers, import_onnxruntime

    providers = choose_providers(settings.device, import_onnxruntime().get_available_providers())
    return OnnxRuntimeEngine(model, threads=threads, providers=providers, cache_dir=cache_dir,
                             precision=settings.precision, **kwargs)


def _build_tensorrt(settings: EngineSettings, model: str, threads: int, cache_dir: str | None, triton: Any,
                    **kwargs: Any) -> Engine:
    from da3_ros.engines.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(model, precision=settings.precision, cache_dir=cache_dir, **kwargs)


def _build_openvino(settings: EngineSettings, model: str, threads: int, cache_dir: str | None, triton: Any,
                    **kwargs: Any) -> Engine:
    from da3_ros.engines.openvino_engine import OpenVinoEngine

    return OpenVinoEngine(model, device=settings.device, precision=settings.precision, threads=threads,
                          cache_dir=cache_dir, **kwargs)


# backend -> factory (each imports its runtime only when called: torch never enters an onnxruntime process)
FACTORIES: dict[str, Callable[..., Engine]] = {
    Backend.TORCH.value: _build_torch, Backend.ONNXRUNTIME.value: _build_onnxruntime,
    Backend.TENSORRT.value: _build_tensorrt, Backend.TRITON.value: _build_triton,
    Backend.OPENVINO.value: _build_openvino,
}


def _build(settings: EngineSettings, model: str, threads: int, cache_dir: str | None, triton: Any,
           **kwargs: Any) -> Engine:
    """The engine of one resolved backend, from the factory table."""
    return FACTORIES[settings.backend](settings, model, threads, cache_dir, triton, **kwargs)
