"""OpenVINO backend: the plain fp32 ONNX graph the cache exports, compiled by OpenVINO for a CPU, iGPU or NPU.

Per rig shape (``FixedShapeEngine``): the fp32 graph (the same one TensorRT parses; OpenVINO reads ONNX as it is)
compiled for the device with the precision as an inference hint (``fp32``: f32; ``bf16``: OpenVINO's bf16
kernels, only where the CPU has AVX512-BF16 or AMX; ``fp16``: f16 on an Intel GPU or NPU). The compiled model is
cached by OpenVINO in the artifact cache (``<cache>/openvino``, its CACHE_DIR: keyed by OpenVINO on the graph,
the device, the hints and its version), so a second start imports it instead of compiling. The first compile of
a shape is gated like a TensorRT plan: its outputs on ``example_inputs`` against the fp32 graph on ONNX Runtime;
a compile that passes is remembered in a sealed record of the artifact cache (no gate at the next start), one
that fails is refused with its figures and remembered for the process. Under precision ``auto``, a bf16 (fp16)
compile that the gate refuses runs in fp32 instead; under backend ``auto``, any refused compile runs on ONNX
Runtime (said in the log and in /diagnostics). Never imports torch.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from da3_ros.engines.base import BackendUnavailable, EngineConfigError, EngineSettings
from da3_ros.engines.cache import ArtifactCache, sha256_file
from da3_ros.engines.cpu_features import cpu_model
from da3_ros.engines.fixed_shape import FixedShapeEngine, Shape
from da3_ros.engines.graph_io import example_inputs, graph_outputs
from da3_ros.engines.parity import EngineParityError, default_parity_names, parity
from da3_ros.engines.tensorrt_plan import LazyReference

_LOG = logging.getLogger(__name__)
OV_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# our precision -> OpenVINO's INFERENCE_PRECISION_HINT (int8: the weights are int8, the activations f32)
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
DEVICE_FAMILIES = ("CPU", "GPU", "NPU", "AUTO")
# the gate's thresholds per precision: (min correlation, max relative error) against fp32 ONNX Runtime
# (bf16: a safety net against a broken compile, looser than its measured error, as TensorRT's fp16 gate is)
GATES = {"fp32": (0.9999, 1e-3), "bf16": (0.995, 2e-2), "fp16": (0.995, 2e-2), "int8": (0.995, 2e-2)}
GATE_KIND = "ov-gate"
INT8_KIND = "ov-int8"  # the fp32 graph with int8 weights (NNCF), as OpenVINO IR: <kind>-<key>.xml + .bin


class OpenVinoRefused(BackendUnavailable):
    """OpenVINO's compile of a shape failed the parity gate; remembered for the process, never compiled again."""


def import_openvino() -> Any:
    """The openvino module, or BackendUnavailable naming what to install."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable("backend openvino needs OpenVINO: `pip install openvino` (requirements/"
                                 "runtime.txt pins it), or use backend onnxruntime") from exc
    return openvino


def int8_model(graph: Path, cache: ArtifactCache | None) -> Any:
    """The fp32 graph with its MatMul/conv weights in int8 (NNCF weights-only, asymmetric, per channel).

    No calibration data: the activations stay f32, so the only error is the weights' rounding (measured
    correlation 0.9992 against fp32). An IR in the artifact cache (both files sealed), so the compression runs
    once per graph; the path of its .xml (an in-memory model without a cache).
    """
    try:
        import nncf
    except ImportError as exc:
        raise BackendUnavailable("precision int8 on backend openvino needs NNCF: `pip install nncf` "
                                 "(requirements/runtime.txt pins it), or precision fp32 / bf16") from exc
    ov = import_openvino()
    nncf.set_log_level(logging.ERROR)  # its per-layer table; a progress bar is still printed, once per graph

    def compressed() -> Any:
        return nncf.compress_weights(ov.Core().read_model(str(graph)), mode=nncf.CompressWeightsMode.INT8_ASYM)

    if cache is None:
        return compressed()
    key = {"graph_sha256": sha256_file(graph), "nncf": nncf.__version__, "openvino": ov.get_version(),
           "mode": "int8_asym"}
    xml = cache.path_for(INT8_KIND, key, "xml")
    weights = xml.with_suffix(".bin")  # OpenVINO finds an IR's weights beside it, by the same stem
    with cache.lock(xml):
        if cache.verified(xml) and cache.verified(weights):
            return xml
        with tempfile.TemporaryDirectory(dir=cache.root, prefix=".ov-int8-") as tmp:
            ov.save_model(compressed(), str(Path(tmp) / "m.xml"), compress_to_fp16=False)
            cache.store(weights, (Path(tmp) / "m.bin").read_bytes(), key)
            cache.store(xml, (Path(tmp) / "m.xml").read_bytes(), key)
    return xml


def openvino_device(device: str) -> str:
    """OpenVINO's device name for the ``device`` parameter: auto, cpu -> CPU; CPU, GPU[.n], NPU, AUTO as given.

    ``auto`` (the parameter's default) is the CPU; ``AUTO`` in capitals is OpenVINO's AUTO device (it picks).

    EngineConfigError naming the choices for anything else (e.g. cuda, which OpenVINO does not drive).
    """
    if device == "auto" or device.lower() == "cpu":
        return "CPU"
    name = device.upper()
    if name.partition(".")[0] not in DEVICE_FAMILIES:
        raise EngineConfigError(f"backend openvino runs on OpenVINO's devices CPU, GPU (an Intel GPU), NPU or AUTO "
                                f"(device auto = CPU), got device {device!r}: set one of those, or use backend "
                                "tensorrt / onnxruntime / torch for a CUDA device")
    return name


def check_device_listed(device: str, available: list[str]) -> None:
    """EngineConfigError when OpenVINO does not list ``device`` here (AUTO needs any device)."""
    family = device.partition(".")[0]
    if family == "AUTO" and available:
        return
    if device in available or (device == family and any(a.partition(".")[0] == family for a in available)):
        return
    raise EngineConfigError(f"backend openvino: OpenVINO lists no device {device!r} here (it lists {available}): "
                            "use device CPU (or auto), or install that device's driver (Intel GPU: the compute "
                            "runtime, NPU: the NPU driver)")


def check_parity_ov(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], names: list[str], precision: str,
                    version: str) -> dict[str, tuple[float, float]]:
    """``parity()`` against the thresholds of ``precision`` (GATES); EngineParityError naming every figure."""
    min_corr, max_rel = GATES[precision]
    stats = parity(ours, ref, names)
    bad = [f"{n}: correlation {c:.6f} (need >= {min_corr}), max relative error {r:.4g} (need <= {max_rel})"
           for n, (c, r) in stats.items() if not (c >= min_corr and r <= max_rel)]
    if bad:
        raise EngineParityError(f"OpenVINO {version} {precision} compile disagrees with fp32 ONNX Runtime on a fixed "
                                "input; not used. " + "; ".join(bad) + ".")
    return stats


def compile_cached(core: Any, path: Path | Any, device: str, config: dict[str, Any], cache: ArtifactCache) -> Any:
    """``core.compile_model`` with OpenVINO's CACHE_DIR in the artifact cache, its blobs sealed like our artifacts.

    Under one lock: a blob whose bytes no longer match its seal (or that has none: a crash mid-write) is deleted
    first, so OpenVINO compiles it again instead of importing it; the blobs it writes are sealed after: new ones,
    and ones it wrote again under the same name (a blob it cannot import, e.g. compiled for a CPU with other
    instruction sets: its name does not say the CPU), whose old seal would delete a good blob at the next start.
    """
    folder = cache.root / "openvino"
    with cache.lock(folder):
        for blob in folder.glob("*.blob"):
            cache.verified(blob)  # deletes a mismatching or unsealed blob
        before = {blob.name: _file_stamp(blob) for blob in folder.glob("*.blob")}
        compiled = core.compile_model(str(path), device, {**config, "CACHE_DIR": str(folder)})
        for blob in folder.glob("*.blob"):
            if before.get(blob.name) != _file_stamp(blob):
                cache.seal(blob, {"graph": Path(path).name, "device": device, "config": config})
    return compiled


MADV_DONTNEED = 4  # Linux's madvise advice: drop these pages from this process (a file's are read back on use)


def drop_mapped_pages(root: Path) -> int:
    """Drop this process's resident pages of read-only files it maps under ``root``; the bytes of mapping advised.

    OpenVINO maps a cached blob (and an int8 IR's weights) to load it and keeps the mapping, but runs from the
    weights it copied out into its own layout: measured, after the pages are dropped inference touches almost none
    of them again (+4 MB) and computes the same bits. So the mapped pages only counted in RSS and in a container's
    memory limit: 118 MB for da3-small's 1-view blob. Dropping pages of a read-only mapping never changes a byte:
    a page touched again is read back from the file. Linux only (elsewhere 0, nothing done).
    """
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return 0
    import ctypes

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prefix, advised = os.path.realpath(root) + os.sep, 0
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(prefix) and "w" not in fields[1]:
            lo, hi = (int(v, 16) for v in fields[0].split("-"))
            if madvise(lo, hi - lo, MADV_DONTNEED) == 0:
                advised += hi - lo
    return advised


def _file_stamp(path: Path) -> tuple[int, int, int]:
    """(inode, size, mtime ns): changes when a file is written again, in place or renamed over."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class OpenVinoRunner:
    """One compiled OpenVINO model for one graph file: float32 feeds by name -> outputs by name."""

    def __init__(self, path: Path, device: str, precision: str, threads: int = 0, cache: ArtifactCache | None = None,
                 names: Sequence[str] = ()):
        """``names``: the graph's output names; a compiled port may carry several (its node's, too): these win."""
        ov = import_openvino()
        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if device.startswith(("CPU", "GPU")):
            config["INFERENCE_PRECISION_HINT"] = HINTS[precision]
        if threads > 0 and device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = threads
        t0 = time.perf_counter()
        model = int8_model(path, cache) if precision == "int8" else path
        if cache is None:
            self.compiled = core.compile_model(model if precision == "int8" else str(path), device, config)
        else:
            self.compiled = compile_cached(core, model, device, config, cache)
        self.compile_s = time.perf_counter() - t0
        if cache is not None:
            drop_mapped_pages(cache.root)
        self.version = ov.get_version()
        self.request = self.compiled.create_infer_request()
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.output_names = [next((n for n in names if n in p.get_names()), p.get_any_name())
                             for p in self.compiled.outputs]
        self._lock = threading.Lock()
        _LOG.info("OpenVINO %s on %s (%s): %s, compiled or loaded in %.1f s", self.version, device, precision,
                  path.name, self.compile_s)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for float32 feeds by name (one inference at a time: the request is shared)."""
        with self._lock:
            res = self.request.infer({k: np.ascontiguousarray(feeds[k], dtype=np.float32) for k in self.input_names})
            return {name: np.array(res[port]) for name, port in zip(self.output_names, self.compiled.outputs)}


# (model, shape, precision, device) -> why the gate refused it, for the life of the process: never compiled again
_REFUSED: dict[tuple[str, Shape, str, str], str] = {}
_REFUSED_LOCK = threading.Lock()


def refused_reason(model: str, shape: Shape, precision: str, device: str) -> str | None:
    """Why OpenVINO's compile of this shape was refused earlier in this process, or None."""
    with _REFUSED_LOCK:
        return _REFUSED.get((model, shape, precision, device))


class OpenVinoEngine(FixedShapeEngine):
    """The OpenVINO backend: per rig shape, the fp32 ONNX graph compiled for ``device`` at ``precision``, gated.

    ``fallback``, what a compile the gate refuses runs as instead (said once in the log, in ``describe()`` and
    in ``health()``): ``fp32`` (precision ``auto``: a refused bf16 or fp16 compile runs in fp32), ``onnxruntime``
    (backend ``auto``: any refused compile runs on ONNX Runtime's CPU provider, what auto ran before OpenVINO),
    or ``""``: every set of that shape raises OpenVinoRefused.
    """

    backend = "openvino"
    FALLBACK_KEY = "openvino_fallback"
    # fallback -> (how describe/health say the way it runs, what was refused)
    FALLBACK_WORDS = {"fp32": ("in fp32", "{precision} refused"),
                      "onnxruntime": ("on ONNX Runtime", "OpenVINO refused it")}

    def __init__(self, model: str, device: str = "CPU", precision: str = "fp32", threads: int = 0,
                 cache_dir: str | None = None, fallback: str = "", **kwargs: Any) -> None:
        ov = import_openvino()  # fail at construction, not at the first set
        check_device_listed(device, list(ov.Core().available_devices))
        if precision not in OV_PRECISIONS:
            raise EngineConfigError(f"backend openvino takes precision fp32, bf16, fp16, int8 or auto, got "
                                    f"{precision!r}")
        if fallback not in ("", *self.FALLBACK_WORDS):
            raise EngineConfigError(f"OpenVinoEngine fallback must be '', fp32 or onnxruntime, got {fallback!r}")
        if fallback == "fp32" and precision == "fp32":
            fallback = ""  # nothing below fp32 to fall back to
        self.device, self.precision, self.threads, self.fallback = device, precision, threads, fallback
        runs, refused = self.FALLBACK_WORDS.get(fallback, ("", ""))
        self.FALLBACK_RUNS, self.FALLBACK_REFUSED = runs, refused.format(precision=precision)
        super().__init__(model, cache_dir, **kwargs)
        meta = self.source.meta if self.source.file is not None else {}
        if meta.get("precision", "fp32") != "fp32" or meta.get("attention"):
            raise EngineConfigError(f"backend openvino reads the plain fp32 graph; {self.source.file} is "
                                    f"{meta.get('precision')} {meta.get('attention') or ''}: export it with "
                                    "`da3-ros export --precision fp32` (no --fused-attention), or set model to the "
                                    "checkpoint")
        self.runs_on = EngineSettings(self.backend, device, precision)

    def _graph_kind(self) -> tuple[str, bool]:
        return "fp32", False  # the plain fp32 graph: OpenVINO's precision is a compile hint / its own int8

    def _make_runner(self, shape: Shape) -> Any:
        why = refused_reason(self.source.model, shape, self.precision, self.device)
        if why is None:
            try:
                return self._gated_runner(shape, self.precision)
            except EngineParityError as exc:
                why = f"{type(exc).__name__}: {exc}"
                with _REFUSED_LOCK:
                    _REFUSED[(self.source.model, shape, self.precision, self.device)] = why
        n, hw, _ = shape
        what = f"the {n}-view {hw[1]}x{hw[0]} {self.precision} compile on {self.device}"
        if not self.fallback:
            raise OpenVinoRefused(f"backend openvino: refused {what} ({why}). Not compiled again: remembered until "
                                  "the process restarts. Fix: precision fp32 (or auto), or backend auto / "
                                  "onnxruntime (ONNX Runtime runs it)")
        if shape not in self.fallbacks:
            _LOG.warning("%s: %s refused (%s); running it %s instead", "backend auto" if self.fallback ==
                         "onnxruntime" else "precision auto", what, why, self.FALLBACK_RUNS)
        self.fallbacks[shape] = why
        if self.fallback == "fp32":
            return self._gated_runner(shape, "fp32")
        from da3_ros.engines.onnxruntime_engine import CPU_EP, OrtRunner

        return OrtRunner(self._graph_for(shape), self.threads, [CPU_EP], self.source.cache)

    def _gated_runner(self, shape: Shape, precision: str) -> OpenVinoRunner:
        """The compiled model of ``shape``; gated against fp32 ONNX Runtime unless a sealed record says it passed."""
        n, hw, cond = shape
        graph = self._graph_for(shape)
        cache = self.source.cache
        runner = OpenVinoRunner(graph, self.device, precision, self.threads, cache, graph_outputs(self.variant))
        key = {"graph_sha256": sha256_file(graph), "device": self.device, "precision": precision,
               "openvino": runner.version, "cpu": cpu_model()}
        record = cache.path_for(GATE_KIND, key, "json")
        with cache.lock(record):
            if cache.verified(record):
                return runner
            feeds = example_inputs(n, hw, cond)
            reference = LazyReference(lambda: graph)  # the fp32 graph on ONNX Runtime (CPU)
            names = default_parity_names(runner.output_names)
            stats = check_parity_ov(runner.run(feeds), reference(feeds), names, precision, runner.version)
            _LOG.info("OpenVINO %s compile parity (correlation, max relative error): %s", precision, stats)
            cache.store(record, json.dumps({"parity": stats}).encode(), key)
        return runner
