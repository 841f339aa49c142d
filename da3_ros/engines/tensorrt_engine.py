"""TensorRT backend: build a fixed-shape engine from our ONNX export once, gate it on parity, cache it, run it.

Written against the TensorRT 10.x Python API and kept working on 11.x: the network is always strongly typed
(11.x removed the weak-typing builder flags such as ``BuilderFlag.FP16``), so precision comes from the ONNX graph
itself (we export an fp32 and an fp16 mixed-precision graph); fp32 engines are built with TF32 off. The graphs
parse on TensorRT 10.3 (JetPack 6) too: test/test_trt_compat.py checks them against onnx-tensorrt's operator list.
``tensorrt_status()`` is true only when a Builder and a Runtime can really be created (so ``backend: auto``
falls back to ONNX Runtime otherwise). ``tensorrt`` and ``torch`` are imported lazily so
that this module imports, and its pure helpers work, on machines without either. Device buffers and the CUDA
stream are torch's: torch is present wherever this backend can run, since it exports the ONNX.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from da3_ros.engines.base import BackendUnavailable, EngineConfigError, EngineSettings
from da3_ros.engines.cache import ArtifactCache, sha256_file
from da3_ros.engines.graph_io import example_inputs
from da3_ros.engines.fixed_shape import FixedShapeEngine, Shape
from da3_ros.engines.parity import EngineParityError, check_parity, default_parity_names, version_tuple
from da3_ros.engines.tensorrt_plan import (PRECISIONS, Feeds, LazyReference, TensorRTOutOfMemory, build_plan,
                                           create_context, refuse_fused_attention_graph)
from da3_ros.engines.tensorrt_plan import flags_to_clear as flags_to_clear  # re-exported (the CLI, the tests)

_LOG = logging.getLogger(__name__)
PLAN_KIND = "trt"
MIN_TENSORRT = (10, 0)  # the I/O-tensor API (execute_async_v3) and strongly typed networks
JETSON_RELEASE_FILE = Path("/etc/nv_tegra_release")  # present on every Jetson (L4T)


class TensorRTUnavailable(BackendUnavailable):
    """TensorRT or a CUDA device is missing; the message says what to install."""


def install_hint(cuda_version: str | None = None, jetson: bool | None = None) -> str:
    """How to get a TensorRT that runs here: the wheel for this CUDA major version, or JetPack's on a Jetson.

    ``cuda_version``: the CUDA torch was built for (default: ``torch.version.cuda``, when torch imports);
    ``jetson``: default, whether this is a Jetson. Plain ``pip install tensorrt`` resolves to the CUDA 13
    build, which needs driver >= 580, hence the explicit ``-cu12`` / ``-cu13`` wheel.
    """
    if jetson is None:
        jetson = JETSON_RELEASE_FILE.exists()
    if jetson:
        return ("use JetPack's own TensorRT (JetPack 6: TensorRT 10.3; `sudo apt install nvidia-jetpack`, its Python "
                "module is python3-libnvinfer: make the venv with --system-site-packages), not a PyPI wheel")
    if cuda_version is None:
        cuda_version = _torch_cuda_version()
    major = (cuda_version or "").partition(".")[0]
    if major in ("12", "13"):
        return (f"pip install tensorrt-cu{major} (the wheel for CUDA {major}, which this torch is built for); the "
                "TensorRT backend also needs a CUDA GPU")
    return ("pip install tensorrt-cu12 (CUDA 12, NVIDIA driver >= 525) or pip install tensorrt-cu13 (CUDA 13, "
            f"driver >= 580), matching your CUDA build of torch (here: {cuda_version or 'no CUDA torch'}); the "
            "TensorRT backend also needs a CUDA GPU")


def _torch_cuda_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.version.cuda


@functools.lru_cache(maxsize=1)
def tensorrt_status() -> tuple[bool, str]:
    """(True, TensorRT version) when TensorRT can really start here, else (False, what is missing).

    "Can start" means: ``tensorrt`` imports (10.x or 11.x), torch sees a CUDA device, and a ``trt.Builder`` and
    a ``trt.Runtime`` can be created with a logger (they need a CUDA context; a TensorRT built for another CUDA
    major, or a driver too old for it, fails there). Probed once per process: a context costs time and memory.
    """
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or OSError from a broken libnvinfer install
        return False, f"the tensorrt module does not import ({type(e).__name__}: {e})"
    version = str(getattr(trt, "__version__", "?"))
    if not version_tuple(version) or version_tuple(version) < MIN_TENSORRT:
        return False, f"TensorRT {version} is too old: this backend needs TensorRT 10.x or 11.x"
    try:
        import torch
    except ImportError:
        return False, "torch does not import (it provides the CUDA buffers and stream)"
    if not torch.cuda.is_available():
        return False, "no CUDA device is visible (torch.cuda.is_available() is False)"
    for what in ("Builder", "Runtime"):
        try:
            made = getattr(trt, what)(_trt_logger())
        except Exception as e:  # pybind11 raises TypeError when the factory returns nullptr
            made, err = None, f"{type(e).__name__}: {e}"
        else:
            err = "returned None"
        if made is None:
            return False, (f"TensorRT {version} imports but cannot start: trt.{what}(logger) failed ({err}); "
                           "usually no CUDA context for this TensorRT build (CUDA major or driver mismatch)")
        del made
    return True, version


def unavailable_error(reason: str) -> TensorRTUnavailable:
    """The typed error for an explicitly asked TensorRT backend that cannot run: what is missing, how to fix."""
    return TensorRTUnavailable(f"TensorRT backend unavailable: {reason}. To use it, {install_hint()}; or set "
                               "backend onnxruntime (or auto, which falls back to it).")


def engine_key(onnx_sha256: str, n_views: int, hw: tuple[int, int], precision: str, trt_version: str,
               gpu: str) -> dict:
    """Everything a plan depends on; a change of any entry means a different cache file, hence a rebuild."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {"onnx_sha256": onnx_sha256, "n_views": int(n_views), "hw": [int(hw[0]), int(hw[1])],
            "precision": precision, "tensorrt": trt_version, "gpu": gpu}


def plan_path(cache: ArtifactCache, key: dict) -> Path:
    """Where the plan built for ``key`` is cached (once it passed the parity gate)."""
    return cache.path_for(PLAN_KIND, key, "plan")


def pending_plan_path(cache: ArtifactCache, key: dict) -> Path:
    """Where a plan built for ``key`` waits for its parity gate (its execution context had no GPU memory)."""
    return cache.path_for(PLAN_KIND, {**key, "gate": "pending"}, "plan")


class TensorRTRunner:
    """Runs one fixed-shape engine; feeds and results are numpy float32 arrays keyed by tensor name.

    The plan comes from ``cache`` when a hash-verified one exists for this ONNX file, view count, size,
    precision, TensorRT version and GPU; otherwise it is built, and cached only once its outputs on
    ``export.example_inputs()`` match ``reference`` (a callable mapping the same feeds to outputs of the same names and
    shapes, e.g. the ONNX Runtime session or the torch network) on ``parity_outputs`` (default:
    ``default_parity_names()``). The reference is called only on that build path: pass a lazy one
    (``LazyReference``) so that a cached plan never loads it. A failing engine raises EngineParityError and is
    not cached. A plan built or loaded whose execution context cannot be created (TensorRTOutOfMemory) is kept
    in the cache as not yet gated (``pending_plan_path``): the next runner for it deserialises it and runs the
    gate instead of building it again.
    """

    def __init__(self, onnx_path: Path, cache: ArtifactCache, n_views: int, hw: tuple[int, int], precision: str,
                 reference: Callable[[Feeds], Feeds] | None = None, min_corr: float = 0.999,
                 max_rel: float = 0.05, workspace_gib: float = 4.0, parity_outputs: Sequence[str] | None = None):
        ok, info = tensorrt_status()
        if not ok:
            raise unavailable_error(info)
        self.trt_version = info  # tensorrt_status() answers the version when TensorRT starts
        key = engine_key(sha256_file(onnx_path), n_views, hw, precision, self.trt_version, _gpu_identity())
        self.plan_path = plan_path(cache, key)
        pending = pending_plan_path(cache, key)
        self.built = False  # whether this runner built its plan (tests and logs)
        engine, plan, gated = self._load(cache, self.plan_path), None, True
        if engine is None:  # a plan built before whose gate could not run yet (no memory for its context)
            plan = cache.load_verified(pending)
            engine, gated = (None if plan is None else self._deserialize(plan)), False
            if plan is not None and engine is None:
                cache.discard(pending)
        if engine is None:
            t0 = time.perf_counter()
            plan = self._build(Path(onnx_path), workspace_gib, precision)
            self.built = True
            _LOG.info("built TensorRT %s %s engine for %d views at %dx%d in %.1f s", self.trt_version, precision,
                      n_views, hw[0], hw[1], time.perf_counter() - t0)
            engine = self._deserialize(plan)
            if engine is None:
                raise RuntimeError("TensorRT could not deserialize the engine it just built")
        try:
            self._bind(engine, n_views, hw)
        except TensorRTOutOfMemory:
            if plan is not None and self.built:  # minutes of building: kept, gated when it can run
                cache.store(pending, plan, {**key, "gate": "pending"})
            raise
        if gated:
            return
        assert plan is not None  # built or loaded above
        try:
            if reference is None:
                _LOG.warning("no reference network given: caching the TensorRT engine without a parity check")
            else:
                feeds = example_inputs(n_views, hw, "extrinsics" in self.input_shapes)
                names = (list(parity_outputs) if parity_outputs is not None
                         else default_parity_names(self.output_names))
                stats = check_parity(self.run(feeds), reference(feeds), names, min_corr, max_rel, self.trt_version)
                _LOG.info("TensorRT engine parity (correlation, max relative error): %s", stats)
        except EngineParityError:
            cache.discard(pending)  # refused: never cached, pending or not
            raise
        cache.store(self.plan_path, plan, key)  # only a plan that passed the gate is ever cached
        cache.discard(pending)

    def _load(self, cache: ArtifactCache, path: Path) -> Any:
        """The deserialised engine of the gated plan cached at ``path``, or None (none, corrupt, or stale)."""
        plan = cache.load_verified(path)  # hash-verified bytes only; a corrupted plan is deleted
        engine = None if plan is None else self._deserialize(plan)
        if plan is not None and engine is None:  # e.g. a driver update: drop it and rebuild
            _LOG.warning("cached TensorRT plan %s does not deserialize; rebuilding it", path)
            cache.discard(path)
        return engine

    def _deserialize(self, plan: bytes) -> Any:
        """``plan`` as an ICudaEngine (None when TensorRT cannot deserialise it); the runtime is kept with it."""
        import tensorrt as trt

        if getattr(self, "_runtime", None) is None:
            self._runtime = trt.Runtime(_trt_logger())  # kept: the engine must not outlive its runtime
        return self._runtime.deserialize_cuda_engine(plan)

    def _build(self, onnx_path: Path, workspace_gib: float, precision: str) -> bytes:
        """Build the plan (``build_plan``): minutes on a robot."""
        return build_plan(onnx_path, workspace_gib, precision)

    def _bind(self, engine: Any, n_views: int, hw: tuple[int, int]) -> None:
        """One persistent torch CUDA buffer per I/O tensor, registered with the execution context."""
        import tensorrt as trt
        import torch

        self._engine = engine
        self._context = create_context(engine, f"the {n_views}-view {hw[1]}x{hw[0]} engine")
        self._stream, self._lock = torch.cuda.Stream(), threading.Lock()
        self.input_names, self.output_names, self.input_shapes = [], [], {}
        self._buffers, self._np_dtypes = {}, {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"tensor {name!r} has dynamic shape {shape}; export the ONNX with fixed shapes")
            np_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            buf = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, np_dtype)).dtype, device="cuda")
            if not self._context.set_tensor_address(name, int(buf.data_ptr())):
                raise RuntimeError(f"TensorRT rejected the device buffer for tensor {name!r}")
            self._buffers[name], self._np_dtypes[name] = buf, np_dtype
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input_names.append(name)
                self.input_shapes[name] = shape
            else:
                self.output_names.append(name)
        images = self.input_shapes.get("images")
        if images is not None and (images[1] != n_views or tuple(images[-2:]) != tuple(hw)):
            raise RuntimeError(f"engine input 'images' is {images}, expected {n_views} views at {hw[0]}x{hw[1]}")

    def run(self, feeds: Feeds) -> Feeds:
        """One inference: copy ``feeds`` in, execute on this runner's stream, return float32 outputs."""
        import torch

        if set(feeds) != set(self.input_names):
            raise ValueError(f"feeds {sorted(feeds)} do not match the engine's inputs {sorted(self.input_names)}")
        for name in self.input_names:
            if tuple(np.shape(feeds[name])) != self.input_shapes[name]:
                raise ValueError(f"input {name!r} has shape {tuple(np.shape(feeds[name]))}, but the engine was "
                                 f"built for {self.input_shapes[name]}")
        with self._lock, torch.cuda.stream(self._stream):  # the buffers are shared: one inference at a time
            for name in self.input_names:
                host = np.ascontiguousarray(feeds[name], dtype=self._np_dtypes[name])
                self._buffers[name].copy_(torch.from_numpy(host))
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed; its log above says why")
            self._stream.synchronize()
            return {name: self._buffers[name].float().cpu().numpy() for name in self.output_names}


_LOGGER = None


def _trt_logger() -> Any:
    # One logger for the process: TensorRT objects keep a reference to theirs, and it must outlive them.
    global _LOGGER
    if _LOGGER is None:
        import tensorrt as trt

        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def _gpu_identity() -> str:
    """Model name and compute capability: a plan only runs on the GPU architecture it was tuned for."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{torch.cuda.get_device_name()} (sm_{major}{minor})"


class TensorRTRefused(BackendUnavailable):
    """Explicit ``backend: tensorrt``: TensorRT refused an engine (parity gate, or no GPU memory for its context).

    Remembered for the process: later sets of that shape raise it again at once, nothing is rebuilt.
    """


# (model, shape, precision) -> why TensorRT refused it, for the life of the process: a refused engine is never
# built again here (a build takes minutes; TensorRT's version, the GPU and the graph do not change meanwhile)
_REFUSED: dict[tuple[str, Shape, str], str] = {}
_REFUSED_LOCK = threading.Lock()


def refused_reason(model: str, shape: Shape, precision: str) -> str | None:
    """Why TensorRT refused this engine earlier in this process, or None."""
    with _REFUSED_LOCK:
        return _REFUSED.get((model, shape, precision))


class TensorRTEngine(FixedShapeEngine):
    """The TensorRT backend: per rig shape, the ``precision`` ONNX graph built into a cached, parity-gated plan.

    The gate's reference is the fp32 graph on ONNX Runtime (CPU), run on the same fixed input, loaded only when
    a plan is built. An engine TensorRT refuses (the gate, or no GPU memory for its context) is remembered for
    the process and never rebuilt: with ``fallback`` (``backend: auto``) that shape runs on ONNX Runtime
    instead (the fp32 graph, CUDA then CPU; said once in the log, in ``describe()`` and in ``health()`` for
    /diagnostics); without it (``backend: tensorrt``) every set of that shape raises TensorRTRefused naming the
    gate's figures and the fix.
    """

    backend = "tensorrt"
    # a shape TensorRT refused runs on ONNX Runtime instead (under backend auto): how describe/health say it
    FALLBACK_KEY, FALLBACK_RUNS, FALLBACK_REFUSED = "tensorrt_fallback", "on ONNX Runtime", "TensorRT refused it"

    def __init__(self, model: str, precision: str = "fp16", cache_dir: str | None = None,
                 workspace_gib: float = 4.0, fallback: bool = False, **kwargs: Any) -> None:
        ok, info = tensorrt_status()
        if not ok:
            raise unavailable_error(info)
        if precision not in PRECISIONS:
            raise EngineConfigError(f"TensorRT precision must be one of {PRECISIONS}, got {precision!r} (bf16 runs "
                                    "on backend torch, or openvino on a CPU with AVX512-BF16 or AMX)")
        self.precision = precision
        self.workspace_gib = workspace_gib
        self.fallback = fallback
        super().__init__(model, cache_dir, **kwargs)
        if self.source.file is not None:  # a given file: refused at load, not at every set's parse
            refuse_fused_attention_graph(self.source.file, self.source.meta)
        self.runs_on = EngineSettings(self.backend, "cuda", precision)

    def _graph_kind(self) -> tuple[str, bool]:
        return self.precision, False  # plain ONNX: TensorRT's parser reads it

    def _fp32_graph(self, shape: Shape) -> Path:
        n, hw, cond = shape
        return self.source.onnx_for(n, hw, cond, "fp32")

    def _make_runner(self, shape: Shape) -> Any:
        why = refused_reason(self.source.model, shape, self.precision)
        if why is None:
            try:
                return self._tensorrt_runner(shape)
            except (EngineParityError, TensorRTOutOfMemory) as exc:
                why = f"{type(exc).__name__}: {exc}"
                with _REFUSED_LOCK:
                    _REFUSED[(self.source.model, shape, self.precision)] = why
        return self._refused(shape, why)

    def _tensorrt_runner(self, shape: Shape) -> TensorRTRunner:
        n, hw, cond = shape
        reference = LazyReference(lambda: self._fp32_graph(shape))  # loaded only if a plan is built
        min_corr, max_rel = (0.9999, 1e-3) if self.precision == "fp32" else (0.99, 0.05)
        return TensorRTRunner(self._graph_for(shape), self.source.cache, n, hw,
                              self.precision, reference, min_corr, max_rel, self.workspace_gib)

    def _refused(self, shape: Shape, why: str) -> Any:
        """The runner for a shape TensorRT refused: ONNX Runtime under ``fallback``, else TensorRTRefused."""
        n, hw, cond = shape
        what = f"the {n}-view {hw[1]}x{hw[0]} {self.precision} engine"
        if not self.fallback:
            raise TensorRTRefused(
                f"backend tensorrt: TensorRT refused {what} ({why}). Not rebuilt: remembered until the process "
                "restarts. Fix: backend auto (runs this shape on ONNX Runtime instead) or onnxruntime; or "
                "upgrade TensorRT (10.14+ fixes JetPack 6's depth scale), or, for memory, fewer views, a smaller "
                "process_res or precision fp16")
        from da3_ros.engines.onnxruntime_engine import OrtRunner, choose_providers, import_onnxruntime

        graph = self._fp32_graph(shape)  # the gate's reference graph: exported once, usually already there
        runner = OrtRunner(graph, providers=choose_providers("cuda", import_onnxruntime().get_available_providers()),
                           cache=self.source.cache)
        if shape not in self.fallbacks:
            _LOG.warning("backend auto: TensorRT refused %s (%s); running it on ONNX Runtime (fp32 graph) instead, "
                         "for the life of this process", what, why)
        self.fallbacks[shape] = why
        return runner
