"""Building a TensorRT plan and what may go into one: the parser, the builder flags, the execution context.

Also the parity gate's reference (``LazyReference``: loaded on the build path only) and the check that a given
graph is one TensorRT can parse. ``tensorrt`` is imported inside the functions that call it, so this module
imports on machines without it. The names are re-exported by ``tensorrt_engine``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from da3_ros.engines.base import BackendUnavailable, EngineConfigError

PRECISIONS = ("fp32", "fp16")
Feeds = dict[str, np.ndarray]


class TensorRTOutOfMemory(BackendUnavailable):
    """The engine was built but TensorRT could not create its execution context (GPU memory exhausted)."""


def flags_to_clear(precision: str) -> tuple[str, ...]:
    """The ``trt.BuilderFlag`` names switched off for a graph of ``precision``.

    fp32: TF32, which TensorRT 10.x and 11.x enable by default: on Ampere and newer it rounds fp32 matrix inputs
    to a 10-bit mantissa, which would fail the fp32 parity gate (max relative error 1e-3) that fp32 is chosen for.
    fp16: none (its matrix work is fp16 already; its fp32 parts are normalisations).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return ("TF32",) if precision == "fp32" else ()


def build_plan(onnx_path: Path, workspace_gib: float = 4.0, precision: str | None = None) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized engine (plan) from it.

    ``precision``: the graph's (default: read from its da3_ros metadata); fp32 builds without TF32. Raises
    TensorRTUnavailable when TensorRT cannot start, RuntimeError listing every ONNX parser error, or when the
    builder returns no plan.
    """
    import tensorrt as trt

    from da3_ros.engines.tensorrt_engine import _trt_logger, unavailable_error

    if precision is None:
        from da3_ros.engines.onnx_source import read_metadata

        precision = str(read_metadata(Path(onnx_path)).get("precision", "fp32"))
    clear = flags_to_clear(precision)
    logger = _trt_logger()
    builder = trt.Builder(logger)
    if builder is None:
        raise unavailable_error(f"trt.Builder(logger) returned None (TensorRT {trt.__version__} has no CUDA context)")
    # Strongly typed: layer precisions follow the ONNX graph. The flag is ignored (but kept) in 11.x, where
    # strong typing is always on; check the attribute so a later release that drops it still works.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    # From the file, not from bytes: the parser then finds external weight files beside a >2 GB graph.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  {_parser_error_text(parser.get_error(i))}" for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path} ({parser.num_errors} errors):\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    for name in clear:
        if hasattr(trt.BuilderFlag, name):  # present in 10.0 through 11.4
            config.clear_flag(getattr(trt.BuilderFlag, name))
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}; its log above says why")
    return bytes(plan)


def create_context(engine: Any, what: str) -> Any:
    """``engine.create_execution_context()``, or TensorRTOutOfMemory naming the memory it needed.

    TensorRT returns None (no exception) when it cannot allocate the context's activation memory.
    """
    context = engine.create_execution_context()
    if context is not None:
        return context
    need = getattr(engine, "device_memory_size_v2", None) or getattr(engine, "device_memory_size", None)
    need_text = f"{int(need) / 2**20:.0f} MiB of activations" if isinstance(need, (int, float)) else "its memory"
    raise TensorRTOutOfMemory(
        f"TensorRT could not create an execution context for {what} (create_execution_context() returned None): "
        f"the GPU has no room for {need_text}{_free_gpu_text()}. Free GPU memory (other processes), or use fewer "
        "views, a smaller process_res, precision fp16, or backend onnxruntime")


def _free_gpu_text() -> str:
    try:
        import torch

        free, total = torch.cuda.mem_get_info()
    except Exception:  # no torch or no CUDA here: the message goes without the numbers
        return ""
    return f" ({free / 2**20:.0f} of {total / 2**20:.0f} MiB free)"


def _parser_error_text(err: Any) -> str:
    where = f" in node {err.node_name()!r} ({err.node_operator()})" if hasattr(err, "node_name") else ""
    return f"{err.code()}{where}: {err.desc()}"


class LazyReference:
    """The parity gate's reference, the fp32 graph on ONNX Runtime (CPU), loaded on its first call only.

    A runner whose plan comes from the cache never calls it: no fp32 session is loaded (host RAM is GPU memory
    on a Jetson). ``graph``: a callable that returns the fp32 graph's path (it may export it).
    """

    def __init__(self, graph: Callable[[], Path]):
        self._graph = graph
        self.runner: Any = None  # the OrtRunner, once called

    def __call__(self, feeds: Feeds) -> Feeds:
        """The reference's outputs for ``feeds`` (the session is created on the first call)."""
        if self.runner is None:
            from da3_ros.engines.onnxruntime_engine import CPU_EP, OrtRunner

            self.runner = OrtRunner(self._graph(), providers=[CPU_EP])
        outputs: Feeds = self.runner.run(feeds)
        return outputs


def refuse_fused_attention_graph(file: Path | None, meta: dict) -> None:
    """EngineConfigError for a given .onnx whose attention is ONNX Runtime's fused op (TensorRT cannot parse it)."""
    from da3_ros.engines.onnx_source import FUSED_ATTENTION_OP

    if file is not None and meta.get("attention") == FUSED_ATTENTION_OP:
        raise EngineConfigError(
            f"{file} runs attention as ONNX Runtime's fused {FUSED_ATTENTION_OP}, which TensorRT cannot parse: "
            "export it again without --fused-attention (`da3-ros export ... --precision fp16`) for backend "
            "tensorrt, or run this file on backend onnxruntime")
