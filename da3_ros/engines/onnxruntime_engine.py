"""ONNX Runtime backend: exported DA3 graphs on CPU, or on the GPU through the CUDA execution provider.

Never imports torch: preprocessing is numpy, graphs come from ``da3-ros export`` or are exported on demand
in a separate process (see onnx_source). On CPU the graph is optimised once (constant folding, fusions) by a
child process into the cache: done at every start, that costs seconds and ~120 MB of peak memory; only the
cheap layout passes that depend on the CPU run at load.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from da3_ros.engines.base import BackendUnavailable, EngineConfigError, EngineSettings
from da3_ros.engines.cache import ArtifactCache, data_file, sha256_file
from da3_ros.engines.fixed_shape import FixedShapeEngine, Shape

_LOG = logging.getLogger(__name__)
CPU_EP, CUDA_EP, TENSORRT_EP = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
GRAPH_PRECISIONS = ("fp32", "fp16", "int8")


def import_onnxruntime() -> Any:
    """The onnxruntime module, or BackendUnavailable naming what to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable("backend onnxruntime needs ONNX Runtime: `pip install onnxruntime` "
                                 "(or onnxruntime-gpu for CUDA)") from exc
    return onnxruntime


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """ONNX Runtime's execution providers for ``device``, in order, from those this build has (``available``).

    ``cpu``: the CPU provider only. ``cuda`` (or ``auto``): the CUDA provider, then the CPU provider (the CPU
    alone where the build has no CUDA provider). Never TensorRT's execution provider, even where the build has
    it: it would build its own engines with no cache of ours, no parity gate and one TensorRT partition per
    fused-attention node; TensorRT runs only through backend tensorrt (gated, cached). EngineConfigError for
    another device.
    """
    if device == "cpu":
        wanted = [CPU_EP]
    elif device in ("auto", "cuda"):
        wanted = [CUDA_EP, CPU_EP]
    else:
        raise EngineConfigError(f"ONNX Runtime's providers are chosen for device cpu, cuda or auto, got {device!r}")
    return [p for p in wanted if p in available] or [CPU_EP]


def _session_providers(providers: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The providers a session gets, never TensorRT's (see ``choose_providers``).

    ``providers`` (default: ``choose_providers('auto')``) that this build has; the CPU provider when none is left.
    """
    if providers is None:
        return choose_providers("auto", available)
    return [p for p in providers if p in available and p != TENSORRT_EP] or [CPU_EP]


def int8_graph_problem(graph_bits: int | None, cpu_bits: int) -> str | None:
    """What is wrong with running an int8 graph of ``graph_bits``-bit weights on a CPU that needs ``cpu_bits``.

    ``cpu_bits``: ``cpu_features.int8_weight_bits()`` (7 on x86 without VNNI, else 8); ``graph_bits``: the
    graph's ``int8_weight_bits`` metadata (None: exported before it was recorded). None when it runs as meant
    (7-bit weights run exactly everywhere, 8-bit ones where the kernels do not saturate).
    """
    if cpu_bits >= 8 or graph_bits == 7:
        return None
    if graph_bits is None:
        return ("its weight bits are not recorded (exported before they were), and this x86 CPU has no VNNI: "
                "if its weights are 8-bit, ONNX Runtime's AVX2 kernels saturate (depth correlation 0.996 "
                "against fp32 measured on such a CPU)")
    return (f"it was quantized with {graph_bits}-bit weights (on a CPU with VNNI), and this x86 CPU has no VNNI: "
            "ONNX Runtime's AVX2 int8 kernels saturate with 8-bit weights (depth correlation 0.996 against fp32 "
            "measured on such a CPU); 7-bit weights do not")


def check_int8_graph(path: Path, meta: dict, cpu_bits: int | None = None) -> None:
    """Refuse (EngineConfigError) an 8-bit int8 graph on a CPU whose kernels saturate; warn for unknown bits.

    ``meta``: the graph's da3_ros metadata; ``cpu_bits``: default, this CPU's (``cpu_features``).
    """
    from da3_ros.engines.cpu_features import int8_weight_bits

    if meta.get("precision") != "int8":
        return
    bits = meta.get("int8_weight_bits")
    problem = int8_graph_problem(None if bits is None else int(bits), int8_weight_bits() if cpu_bits is None
                                 else cpu_bits)
    if problem is None:
        return
    fix = ("export it again on this machine (`da3-ros export --precision int8 ...` writes 7-bit weights here), "
           "or set model to the checkpoint (the cache quantizes for this CPU), or use precision fp32")
    if bits is None:
        _LOG.warning("int8 graph %s: %s. To be sure, %s", path, problem, fix)
        return
    raise EngineConfigError(f"int8 graph {path}: {problem}. To run int8 here, {fix}")


def optimize_graph(src: Path, dst: Path, weights_name: str) -> None:
    """Write ``src`` with ONNX Runtime's extended optimisations applied to ``dst`` (runs in a child process).

    The weights go to ``weights_name`` beside ``dst``: a session then reads them from that file instead of
    parsing a 100+ MB protobuf and copying every tensor out of it, which was the peak of a process's memory
    (about +100 MB for da3-small) before its first forward.
    """
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", weights_name)
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])


def optimized_for_cpu(path: Path, cache: ArtifactCache) -> Path:
    """The cached optimised copy of ``path`` (it may hold ONNX Runtime's own fused ops: keyed on its version)."""
    ort = import_onnxruntime()
    key = {"graph_sha256": sha256_file(path), "onnxruntime": ort.__version__, "level": "extended",
           "initializers": "external"}
    opt = cache.path_for("ort-cpu", key, "onnx")
    weights = data_file(opt)  # the name the graph refers to, so it is written in place
    with cache.lock(opt):  # from the check to the seal: a second process waits, then loads it
        if cache.verified(opt):
            return opt
        opt.parent.mkdir(parents=True, exist_ok=True)
        tmp = opt.with_name(f".{opt.name}.partial")
        proc = subprocess.run([sys.executable, "-m", "da3_ros.engines.onnxruntime_engine", str(path), str(tmp),
                               weights.name], capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not tmp.is_file() or not weights.is_file():
            tmp.unlink(missing_ok=True)
            weights.unlink(missing_ok=True)
            _LOG.warning("could not pre-optimise %s (exit %s: %s); optimising at load instead", path.name,
                         proc.returncode, proc.stderr[-300:].strip() or "no weights file written")
            return path
        tmp.replace(opt)
        return cache.seal(opt, key)  # the sidecar hashes the weights file too


def session_options(ort: Any, threads: int = 0) -> Any:
    """The SessionOptions of every forward session: all graph optimisations, ``threads`` intra-op threads.

    ``OMP_WAIT_POLICY=PASSIVE`` in the environment (torch's OpenMP threads then sleep while idle) also stops
    ONNX Runtime's threads spinning between runs: one setting for a machine whose cores are shared.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per physical core
    so.inter_op_num_threads = 1
    # No arena: it keeps the largest activations of every run allocated (+40 % resident memory here)
    # for no measurable speed-up on this graph.
    so.enable_cpu_mem_arena = False
    if os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OrtRunner:
    """One ONNX Runtime session for one graph file."""

    def __init__(self, path: Path, threads: int = 0, providers: list[str] | None = None,
                 cache: ArtifactCache | None = None):
        ort = import_onnxruntime()
        chosen = _session_providers(providers, ort.get_available_providers())
        if chosen == [CPU_EP] and cache is not None:
            path = optimized_for_cpu(path, cache)  # the remaining (layout) passes run at load
        so = session_options(ort, threads)
        self.session = ort.InferenceSession(str(path), so, providers=chosen)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        _LOG.info("ONNX Runtime %s on %s: %s", ort.__version__, self.session.get_providers()[0], path.name)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for float32 feeds by name."""
        res = self.session.run(None, {k: np.ascontiguousarray(feeds[k], dtype=np.float32) for k in self.input_names})
        return dict(zip(self.output_names, res))


class OnnxRuntimeEngine(FixedShapeEngine):
    """``model``: a .onnx from ``da3-ros export`` or a checkpoint spec (graphs exported into ``cache_dir``)."""

    backend = "onnxruntime"

    def __init__(self, model: str, threads: int = 0, providers: list[str] | None = None,
                 cache_dir: str | None = None, precision: str = "fp32", **kwargs: Any) -> None:
        ort = import_onnxruntime()  # fail at construction, not at the first set
        if precision not in GRAPH_PRECISIONS:
            raise EngineConfigError(f"backend onnxruntime takes precision fp32 or fp16 (the mixed fp16 graph) or int8 "
                                    f"(the dynamically quantized graph, CPU), got {precision!r}; bf16 runs on "
                                    "backend torch, or openvino on a CPU with AVX512-BF16 or AMX")
        if precision == "int8":
            providers = [CPU_EP]  # DynamicQuantizeMatMul has CPU kernels only
        self.threads = threads
        self.providers = providers
        # The graph it runs: fp32, fp16 (export.fp16: fp32 where fp16 is unsafe), int8 (export.int8).
        self.precision = precision
        super().__init__(model, cache_dir, **kwargs)
        if self.source.file is not None:
            check_int8_graph(self.source.file, self.source.meta)  # refused at load, not saturated at run time
        first = _session_providers(providers, ort.get_available_providers())[0]
        self.runs_on = EngineSettings(self.backend, "cpu" if first == CPU_EP else "cuda", precision)

    def _graph_kind(self) -> tuple[str, bool]:
        # fp32 and int8: attention as one MultiHeadAttention node (export.fused_attention: no score tensors).
        # fp16 is TensorRT's mixed graph, kept plain ONNX.
        return self.precision, self.precision != "fp16"

    def _graphs_for(self, views: list[int], hw: tuple[int, int], conditioned: bool,
                    background: bool = False) -> list[Path]:
        try:
            return super()._graphs_for(views, hw, conditioned, background)
        except BackendUnavailable as missing:  # no torch here to export it: a cache made before may hold the
            try:                               # plain graphs of these shapes, which compute the same
                plain = self.source.onnx_for_views(views, hw, conditioned, self.precision, False, background)
            except BackendUnavailable:
                raise missing from None
            _LOG.warning("no fused-attention graph for %s views in the cache and no torch to export it: running "
                         "the plain graph (more memory); `da3-ros build-engine --backend onnxruntime` where torch "
                         "is installed writes it", "/".join(map(str, views)))
            return plain

    def _make_runner(self, shape: Shape) -> OrtRunner:
        return OrtRunner(self._graph_for(shape), self.threads, self.providers, self.source.cache)


if __name__ == "__main__":  # python -m da3_ros.engines.onnxruntime_engine SRC DST WEIGHTS (optimized_for_cpu)
    optimize_graph(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
