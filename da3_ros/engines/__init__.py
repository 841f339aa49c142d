"""Inference engines: one interface (``Engine.infer``), one backend per module.

Torch is imported only by the torch backend and the exporter, so ``onnxruntime`` processes never load it.
"""
from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from da3_ros.engines.base import (BackendUnavailable, Engine, EngineConfigError, EngineSettings, EngineUnavailable,
                                  FrameBatch)
from da3_ros.core.errors import ConfigError
from da3_ros.core.params import Backend, Precision, choices

__all__ = ["BACKENDS", "PRECISIONS", "BackendUnavailable", "Engine", "EngineConfigError", "EngineSettings",
           "EngineUnavailable", "FrameBatch", "Hardware", "create_engine", "create_fixed_shape_engine",
           "engine_from_config", "resolve_backend", "resolve_settings"]
if TYPE_CHECKING:
    from da3_ros.core.config import DepthConfig
    from da3_ros.engines.fixed_shape import FixedShapeEngine

_LOG = logging.getLogger(__name__)
BACKENDS = choices(Backend)
PRECISIONS = choices(Precision)
GPU_PROVIDERS = ("CUDAExecutionProvider",)  # ONNX Runtime on a GPU (never its TensorRT provider: choose_providers)


class Hardware:
    """What this machine offers the engines, asked lazily (probing CUDA imports torch; ONNX Runtime must not)."""

    def tensorrt(self) -> tuple[bool, str]:
        """(True, version) when TensorRT can start here (a Builder and a Runtime were created), else (False, why)."""
        from da3_ros.engines.tensorrt_engine import tensorrt_status

        return tensorrt_status()

    def ort_providers(self) -> list[str]:
        """ONNX Runtime's available execution providers; [] without onnxruntime."""
        if importlib.util.find_spec("onnxruntime") is None:
            return []
        import onnxruntime

        return list(onnxruntime.get_available_providers())

    def torch_cuda(self) -> bool:
        """Whether torch sees a CUDA device."""
        if importlib.util.find_spec("torch") is None:
            return False
        import torch

        return bool(torch.cuda.is_available())

    def cpu_bf16(self) -> bool:
        """Whether the CPU has AVX512-BF16 or AMX-BF16 (OpenVINO's bf16 kernels)."""
        from da3_ros.engines.cpu_features import cpu_has_bf16

        return cpu_has_bf16()

    def torch_bf16(self) -> bool:
        """Whether the CUDA device computes bf16 (else fp16 is torch's auto precision there)."""
        import torch

        return bool(torch.cuda.is_bf16_supported())


def _gpu_index(device: str) -> int | None:
    """None for 'cpu'/'auto', else the CUDA device index ('cuda' = 0); EngineConfigError for anything else."""
    if device in ("auto", "cpu"):
        return None
    head, _, index = device.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise EngineConfigError(f"device must be auto, cpu, cuda or cuda:<n>, got {device!r}")
    return int(index or 0)


def resolve_backend(backend: str, device: str = "auto", hw: Hardware | None = None) -> str:
    """The backend ``backend`` names; ``auto`` is resolved for ``device`` on this machine.

    ``auto``: TensorRT when it runs here (and the device is not cpu), else ONNX Runtime (when it runs on the
    device), else torch. ``triton`` (a remote server) is never chosen automatically: it needs a server address.
    """
    if backend not in BACKENDS:
        raise EngineConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    hw = hw or Hardware()
    gpu = _gpu_index(device)
    if device != "cpu" and gpu in (None, 0):
        ok, why = hw.tensorrt()
        if ok:
            return "tensorrt"
        _warn_once(f"backend auto: not TensorRT ({why}); falling back to ONNX Runtime (else torch)")
    providers = hw.ort_providers()
    if providers and (gpu is None or (gpu == 0 and any(p in providers for p in GPU_PROVIDERS))):
        return "onnxruntime"
    return "torch"


_SAID: set[str] = set()


def _warn_once(text: str) -> None:
    """Say why ``auto`` passed TensorRT over once per process, not once per engine (a metric pair makes two)."""
    if text not in _SAID:
        _SAID.add(text)
        _LOG.warning(text)


def resolve_settings(backend: str, device: str = "auto", precision: str = "auto",
                     hw: Hardware | None = None) -> EngineSettings:
    """The backend, device and precision an engine will really run on; EngineConfigError naming the fix else.

    torch: any device (auto: cpu), auto fp32 on CPU, bf16 (else fp16) on CUDA. onnxruntime: cpu or its CUDA
    provider (auto: when installed), fp32 (auto), the mixed fp16 graph, int8 (CPU). tensorrt: the CUDA GPU, fp32
    or fp16 (auto). triton: the server's device and graph. openvino: ``_openvino_settings``.
    """
    if precision not in PRECISIONS:
        raise EngineConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend == "openvino":
        return _openvino_settings(device, precision, hw or Hardware())
    hw = hw or Hardware()
    gpu = _gpu_index(device)
    if precision == "int8" and backend == "auto" and hw.ort_providers():
        backend = "onnxruntime"  # the only backend with an int8 graph (not TensorRT, even where it runs)
    asked, backend = backend, resolve_backend(backend, device, hw)
    if backend == "triton":
        if device != "auto" or precision != "auto":
            raise EngineConfigError(f"backend triton runs on the server's device and graph (device {device!r}, "
                                    f"precision {precision!r} given): leave both at auto and choose them where "
                                    "the server runs (`da3-ros serve --backend ... --precision ...`)")
        return EngineSettings("triton", "server", "server")
    if backend == "torch":
        if gpu is not None and not hw.torch_cuda():
            if asked == "auto":  # torch was only the last resort: say what auto found, and what auto would run
                raise EngineConfigError(_no_gpu_for_auto(device, precision, hw))
            raise EngineConfigError(f"device {device!r}: torch sees no CUDA device here; use device cpu (or auto), "
                                    "or install a CUDA build of torch")
        dev = "cpu" if gpu is None else device
        if precision == "int8":
            raise EngineConfigError("precision int8 runs on backend onnxruntime (its dynamically quantized graph, on "
                                    "the CPU) or openvino (int8 weights): use one of those, or fp32 / bf16 on torch")
        if precision == "auto":
            precision = "fp32" if gpu is None else ("bf16" if hw.torch_bf16() else "fp16")
        return EngineSettings("torch", dev, precision)
    if precision == "bf16":
        raise EngineConfigError(f"precision bf16 runs on backend torch only; backend {backend!r} takes fp32 or fp16 "
                                f"(auto: {'fp16' if backend == 'tensorrt' else 'fp32'})"
                                f"{'' if backend == 'tensorrt' else ', or int8 on the CPU'}")
    if gpu is not None and gpu > 0:
        raise EngineConfigError(f"backend {backend!r} runs on the first visible GPU (device {device!r} given): set "
                                f"CUDA_VISIBLE_DEVICES={gpu} and device cuda, or use backend torch")
    if backend == "tensorrt":
        if device == "cpu":
            raise EngineConfigError("backend tensorrt runs on a CUDA GPU (device 'cpu' given): use device auto or "
                                    "cuda, or backend onnxruntime / torch for the CPU")
        if precision == "int8":
            raise EngineConfigError("precision int8 on backend tensorrt needs calibration, which is not supported: "
                                    "use fp16 (or fp32) on tensorrt, or int8 on backend onnxruntime with device cpu")
        return EngineSettings("tensorrt", "cuda", "fp16" if precision == "auto" else precision)
    if precision == "int8":
        return _ort_int8(device)
    on_gpu = any(p in hw.ort_providers() for p in GPU_PROVIDERS)
    if gpu is not None and not on_gpu:
        raise EngineConfigError(f"device {device!r} with backend onnxruntime needs its CUDA execution provider "
                                f"(`pip install onnxruntime-gpu`; here: {hw.ort_providers()}); or use device cpu "
                                "(or auto), backend torch or tensorrt")
    dev = "cpu" if device == "cpu" or not on_gpu else "cuda"
    return EngineSettings("onnxruntime", dev, "fp32" if precision == "auto" else precision)


def _openvino_settings(device: str, precision: str, hw: Hardware) -> EngineSettings:
    """OpenVINO: its device names (auto = CPU); fp32, int8 (int8 weights), or bf16 on a CPU with AVX512-BF16/AMX.

    auto: bf16 on such a CPU, else fp32.

    Whether OpenVINO lists the device is checked when the engine is built (it needs openvino imported).
    """
    from da3_ros.engines.openvino_engine import openvino_device

    dev = openvino_device(device)
    if precision == "fp16":
        raise EngineConfigError("backend openvino takes precision fp32, bf16 (a CPU with AVX512-BF16 or AMX), int8 "
                                "(int8 weights, NNCF) or auto, got 'fp16': use one of those, or fp16 on backend "
                                "tensorrt / onnxruntime")
    bf16_here = dev == "CPU" and hw.cpu_bf16()
    if precision == "bf16" and not bf16_here:
        where = (f"device {dev} (bf16 is OpenVINO's CPU hint here)" if dev != "CPU"
                 else "this CPU, which has neither AVX512-BF16 nor AMX")
        raise EngineConfigError(f"backend openvino: precision bf16 does not run natively on {where}: use precision "
                                "fp32 or auto (auto takes bf16 only where the CPU has it)")
    if precision == "auto":
        precision = "bf16" if bf16_here else "fp32"
    return EngineSettings("openvino", dev, precision)


def _no_gpu_for_auto(device: str, precision: str, hw: Hardware) -> str:
    """Why backend auto has nothing for a CUDA ``device`` here: each backend's reason, and what device auto runs."""
    trt_ok, trt_why = hw.tensorrt()
    try:
        here = resolve_settings("auto", "auto", precision, hw)
        instead = f"device auto runs backend {here.backend} on {here.device} here"
    except EngineConfigError as exc:
        instead = f"device auto cannot run here either ({exc})"
    return (f"device {device!r}: no backend sees a CUDA device here (backend auto: tensorrt "
            f"{'runs only on GPU 0' if trt_ok else 'not usable: ' + trt_why}; onnxruntime has no CUDA provider "
            f"(providers: {hw.ort_providers()}); torch sees no CUDA device); {instead}: use device auto (or cpu), "
            "or install a CUDA build (onnxruntime-gpu, torch with CUDA)")


def _ort_int8(device: str) -> EngineSettings:
    """int8 on ONNX Runtime: its quantized MatMul kernels are CPU kernels, so device auto means the CPU."""
    if device not in ("auto", "cpu"):
        raise EngineConfigError(f"precision int8 runs on the CPU (ONNX Runtime's quantized MatMul kernels), device "
                                f"{device!r} given: use device cpu (or auto), or fp16 / fp32 on the GPU")
    return EngineSettings("onnxruntime", "cpu", "int8")


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
    if settings.backend in ("onnxruntime", "tensorrt") and model.endswith(".onnx"):
        settings = _graph_file_settings(settings, model, precision, device, backend)
    if settings.backend == "tensorrt":  # auto: a shape TensorRT refuses runs on ONNX Runtime instead
        kwargs["fallback"] = backend == "auto"
    if settings.backend == "openvino":  # precision auto: a bf16 compile the gate refuses runs in fp32
        kwargs["fallback"] = precision == "auto"
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


def _graph_file_settings(settings: EngineSettings, path: str, precision: str, device: str,
                         backend: str = "auto") -> EngineSettings:
    """A given .onnx runs at the precision it was exported with: auto takes it, another precision is refused.

    An int8 graph runs on ONNX Runtime's CPU kernels only (``device``: the one asked, auto or cpu for int8).
    A fused-attention graph (``--fused-attention``) is ONNX Runtime's only: ``backend`` auto takes onnxruntime
    for it, an explicit tensorrt is refused with the fix (``backend``: the one asked).
    """
    import dataclasses
    from pathlib import Path

    from da3_ros.engines.onnx_source import FUSED_ATTENTION_OP, read_metadata

    if not Path(path).expanduser().is_file():
        return settings  # the engine names the missing file
    meta = read_metadata(Path(path).expanduser())
    if settings.backend == "tensorrt" and meta.get("attention") == FUSED_ATTENTION_OP:
        if backend != "auto":
            from da3_ros.engines.tensorrt_plan import refuse_fused_attention_graph

            refuse_fused_attention_graph(Path(path), meta)
        settings = resolve_settings("onnxruntime", device, precision)
    exported = str(meta.get("precision", "fp32"))
    if exported == "int8" and settings.backend != "onnxruntime":
        raise EngineConfigError(f"{path} is an int8 graph (ONNX Runtime's dynamic quantization): run it on backend "
                                "onnxruntime with device cpu, or export an fp16 / fp32 graph for tensorrt")
    if exported == "int8":
        settings = _ort_int8(device)  # its kernels are CPU kernels, whatever GPU provider is installed
    if precision not in ("auto", exported):
        raise EngineConfigError(f"{path} is a {exported} graph, precision {precision!r} was asked: set precision "
                                f"auto (or {exported}), or export the graph with `da3-ros export --precision "
                                f"{precision}`")
    return dataclasses.replace(settings, precision=exported)


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
