"""Which backend, device and precision an engine runs on: the resolution table, and what the machine offers.

``resolve_settings`` is the one table (the node says its answer at start-up and in /diagnostics); ``Hardware``
answers it lazily, so resolving never imports torch where ONNX Runtime or OpenVINO will run.
"""
from __future__ import annotations

import importlib.util
import logging

from da3_ros.engines.base import EngineConfigError, EngineSettings
from da3_ros.core.params import Backend, Precision, choices

_LOG = logging.getLogger("da3_ros.engines")  # the package's logger: what auto passed over is said there
BACKENDS = choices(Backend)
PRECISIONS = choices(Precision)
# backend auto takes OpenVINO for these (fp16: ONNX Runtime's mixed graph; int8: ONNX Runtime's, more exact at
# half OpenVINO's memory, 0.99997 against 0.99987 depth correlation, BENCHMARKS.md)
OPENVINO_AUTO_PRECISIONS = ("auto", "fp32", "bf16")
GPU_PROVIDERS = ("CUDAExecutionProvider",)  # ONNX Runtime on a GPU (never its TensorRT provider: choose_providers)
RUNTIME_NAMES = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime", "torch": "torch"}  # as the log says them


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

    def openvino_cpu(self) -> bool:
        """Whether OpenVINO is installed and this CPU is one it was measured faster on (backend auto's rule)."""
        from da3_ros.engines.cpu_features import cpu_has_avx512

        return cpu_has_avx512() and importlib.util.find_spec("openvino") is not None

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


def resolve_backend(backend: str, device: str = "auto", hw: Hardware | None = None, precision: str = "auto") -> str:
    """The backend ``backend`` names; ``auto`` is resolved for ``device`` on this machine.

    ``auto``: TensorRT when it runs here (and the device is not cpu), else OpenVINO on the CPU where
    ``Hardware.openvino_cpu`` (AVX-512 and openvino installed; not for ``precision`` fp16 or int8, which ONNX
    Runtime runs; its precision auto is then fp32, as ONNX Runtime's), else ONNX Runtime (when it runs on the
    device), else torch. ``triton`` (a remote server) is never chosen automatically: it needs a server address.
    """
    if backend not in BACKENDS:
        raise EngineConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    hw = hw or Hardware()
    gpu = _gpu_index(device)
    not_trt = ""
    if device != "cpu" and gpu in (None, 0):
        ok, not_trt = hw.tensorrt()
        if ok:
            return "tensorrt"
    providers = hw.ort_providers()
    if gpu is None and precision in OPENVINO_AUTO_PRECISIONS and hw.openvino_cpu():
        chosen = "openvino"
    elif providers and (gpu is None or (gpu == 0 and any(p in providers for p in GPU_PROVIDERS))):
        chosen = "onnxruntime"
    else:
        chosen = "torch"
    if not_trt:
        _warn_once(f"backend auto: not TensorRT ({not_trt}); running on {RUNTIME_NAMES[chosen]} instead")
    return chosen


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
    hw = hw or Hardware()
    if backend == "openvino":
        return _openvino_settings(device, precision, hw)  # OpenVINO's own device names (GPU, NPU, AUTO)
    gpu = _gpu_index(device)
    if precision == "int8" and backend == "auto" and hw.ort_providers():
        backend = "onnxruntime"  # ONNX Runtime's int8 graph (not TensorRT, even where it runs: no calibration)
    asked, backend = backend, resolve_backend(backend, device, hw, precision)
    if backend == "openvino":  # auto's precision there is fp32: auto changes the speed, never the numbers
        return _openvino_settings(device, "fp32" if precision == "auto" else precision, hw)
    if backend == "triton":
        if device != "auto" or precision != "auto":
            raise EngineConfigError(f"backend triton runs on the server's device and graph (device {device!r}, "
                                    f"precision {precision!r} given): leave both at auto and choose them where "
                                    "the server runs (`da3-ros serve --backend ... --precision ...`)")
        return EngineSettings("triton", "server", "server")
    if backend == "torch":
        return _torch_settings(device, gpu, precision, hw, asked)
    if precision == "bf16":
        raise EngineConfigError(f"precision bf16 runs on backend torch, or openvino on a CPU with AVX512-BF16 or "
                                f"AMX; backend {backend!r} takes fp32 or fp16 "
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


def _torch_settings(device: str, gpu: int | None, precision: str, hw: Hardware, asked: str) -> EngineSettings:
    """torch: any device (auto: cpu), auto fp32 on CPU, bf16 (else fp16) on CUDA; ``asked``: the backend asked."""
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


def _openvino_settings(device: str, precision: str, hw: Hardware) -> EngineSettings:
    """OpenVINO's settings: its device names (auto = CPU) and precisions (see below).

    fp32, int8 (int8 weights), bf16 on a CPU with AVX512-BF16/AMX, fp16 on an Intel GPU or NPU. auto: bf16 on
    such a CPU, else fp32; fp16 on a GPU or NPU (their native precision); fp32 on AUTO (it picks).

    Whether OpenVINO lists the device is checked when the engine is built (it needs openvino imported).
    """
    from da3_ros.engines.openvino_engine import openvino_device

    dev = openvino_device(device)
    family = dev.partition(".")[0]
    if precision == "fp16" and family not in ("GPU", "NPU"):
        raise EngineConfigError(f"backend openvino: precision fp16 runs on an Intel GPU or NPU (device GPU, NPU), "
                                f"not on device {dev}: use fp32, bf16 (a CPU with AVX512-BF16 or AMX), int8 or auto "
                                "there, or fp16 on backend tensorrt / onnxruntime")
    bf16_here = dev == "CPU" and hw.cpu_bf16()
    if precision == "bf16" and not bf16_here:
        where = (f"device {dev} (bf16 is OpenVINO's CPU hint here)" if dev != "CPU"
                 else "this CPU, which has neither AVX512-BF16 nor AMX")
        raise EngineConfigError(f"backend openvino: precision bf16 does not run natively on {where}: use precision "
                                f"{'fp16, ' if family in ('GPU', 'NPU') else ''}fp32 or auto (auto takes bf16 only "
                                "where the CPU has it)")
    if precision == "auto":
        precision = "fp16" if family in ("GPU", "NPU") else "bf16" if bf16_here else "fp32"
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


def graph_file_settings(settings: EngineSettings, path: str, precision: str, device: str,
                         backend: str = "auto") -> EngineSettings:
    """A given .onnx runs at the precision it was exported with: auto takes it, another precision is refused.

    An int8 graph runs on ONNX Runtime's CPU kernels only (``device``: the one asked, auto or cpu for int8).
    A fused-attention graph (``--fused-attention``) is ONNX Runtime's only: ``backend`` auto takes onnxruntime
    for it, an explicit tensorrt is refused with the fix (``backend``: the one asked). OpenVINO reads the plain
    fp32 graph at its own precision: auto takes onnxruntime for any other graph (the engine refuses one asked).
    """
    import dataclasses
    from pathlib import Path

    from da3_ros.engines.onnx_source import FUSED_ATTENTION_OP, read_metadata

    if settings.backend not in ("onnxruntime", "tensorrt", "openvino") or not Path(path).expanduser().is_file():
        return settings  # the engine names the missing file (or the backend takes no graph file)
    meta = read_metadata(Path(path).expanduser())
    if settings.backend == "openvino":
        if backend == "auto" and (meta.get("attention") or meta.get("precision", "fp32") != "fp32"):
            return graph_file_settings(resolve_settings("onnxruntime", device, precision), path, precision, device)
        return settings
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
