"""Export a DA3 network to ONNX for a fixed rig: N views, one network size, optional pose conditioning.

The graph is ``InferenceGraph`` (reference view first, no auxiliary ray branch, no data-dependent sky fill)
traced with the TorchScript exporter under ``export_friendly()``; shapes are static, position grids and
embeddings are constants. ``precision="fp16"`` writes a mixed-precision graph for TensorRT's strongly typed
networks (see da3_ros.export.fp16): matrix work in fp16, normalisations, softmax, reductions and
transcendental ops in fp32, inputs and outputs float32. ``precision="int8"`` writes ONNX Runtime's dynamically
quantized graph for the CPU (see da3_ros.export.int8: weight MatMuls int8, the rest fp32). Metadata in the
file tells ONNX Runtime / TensorRT what it holds, so they need no torch. Run ``python -m
da3_ros.export.onnx_export`` (what the torch-free backends call in a subprocess) or ``da3-ros export``.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path


from da3_ros.engines.cache import data_file
from da3_ros.engines.cpu_features import int8_weight_bits
from da3_ros.engines.graph_io import IN_EXTRINSICS, IN_IMAGES, IN_INTRINSICS, example_inputs
from da3_ros.engines.onnx_source import GRAPH_VERSION, META_KEY, PARENT_ENV, WRITTEN_PREFIX

_LOG = logging.getLogger(__name__)
OPSET = 17
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")  # int8: ONNX Runtime (CPU) only
LARGE_MODEL_BYTES = 1_800_000_000  # protobuf messages are limited to 2 GB: above this, weights go beside


def export_onnx(net, variant_name: str, out: Path, n_views: int, hw: tuple[int, int], conditioned: bool = False,
                precision: str = "fp32", label: str = "", trained: bool = True, fused_attention: bool = False) -> Path:
    """Write the ONNX graph of ``net`` for ``n_views`` views of size ``hw`` to ``out``; return ``out``.

    ``fused_attention``: attention as ONNX Runtime's MultiHeadAttention (export.fused_attention), a graph only
    ONNX Runtime runs; without it the graph is plain ONNX (TensorRT, Triton, any runtime).
    """
    return export_onnx_precisions(net, variant_name, {precision: out}, n_views, hw, conditioned, label, trained,
                                  fused_attention)[precision]


def export_onnx_precisions(net, variant_name: str, outs: dict[str, Path], n_views: int, hw: tuple[int, int],
                           conditioned: bool = False, label: str = "", trained: bool = True,
                           fused_attention: bool = False) -> dict[str, Path]:
    """``export_onnx`` for several precisions (``outs``: precision -> file) from ONE trace of the network.

    The trace is most of an export's time (a ViT-L's ~20 s here); fp16 and int8 are conversions of it.
    """
    import onnx

    from da3_ros.export import fused_attention as fa

    for precision in outs:
        if precision not in EXPORT_PRECISIONS:
            raise ValueError(f"precision must be one of {EXPORT_PRECISIONS} for export, got {precision!r}")
    if fused_attention and "fp16" in outs:
        raise ValueError("the fp16 graph is TensorRT's, whose parser has no MultiHeadAttention: export it "
                         "without fused attention")
    if hw[0] % 14 or hw[1] % 14:
        raise ValueError(f"network size must be multiples of 14, got {hw}")
    t0 = time.perf_counter()
    traced, inputs, outputs = _trace(net, n_views, hw, conditioned, fused_attention, next(iter(outs.values())).parent)
    large = sum(len(t.raw_data) for t in traced.graph.initializer) > LARGE_MODEL_BYTES
    converted = [p for p in outs if p != "fp32"]
    if large and converted:  # refused before any file is written
        raise ValueError(f"{variant_name} is over 2 GB: its {converted[0]} graph is not supported yet; export fp32")
    for k, (precision, out) in enumerate(outs.items()):
        model = traced
        if k < len(outs) - 1:  # the conversions and an external-data save change the proto: the last takes it
            model = onnx.ModelProto()
            model.CopyFrom(traced)
        if precision == "fp16":
            model = _to_mixed_fp16(model, out.parent)
        elif precision == "int8":
            from da3_ros.export.int8 import to_dynamic_int8

            model = to_dynamic_int8(model, out.parent)
        meta = {"variant": variant_name, "n_views": n_views, "height": hw[0], "width": hw[1],
                "conditioned": conditioned, "precision": precision, "label": label, "trained": trained,
                "graph_version": GRAPH_VERSION, "inputs": inputs, "outputs": outputs,
                "attention": fa.MHA_OP if fused_attention else "onnx",  # int8: its weight bits, checked at load
                **({"int8_weight_bits": int8_weight_bits()} if precision == "int8" else {})}
        onnx.helper.set_model_props(model, {META_KEY: json.dumps(meta)})
        out.parent.mkdir(parents=True, exist_ok=True)
        data = data_file(out)
        data.unlink(missing_ok=True)
        if large:  # protobuf's 2 GB limit: the weights go to one file beside the graph, <out>.onnx.data
            onnx.save(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
        else:
            onnx.save(model, str(out))
        _LOG.info("exported %s (%d views, %dx%d, %s%s) to %s in %.1f s", variant_name, n_views, hw[1], hw[0],
                  precision, ", pose-conditioned" if conditioned else "", out, time.perf_counter() - t0)
    return dict(outs)


def _trace(net, n_views: int, hw: tuple[int, int], conditioned: bool, fused_attention: bool, work_dir: Path):
    """The traced fp32 graph of ``InferenceGraph(net)`` as a ModelProto, with its input and output names."""
    import onnx
    import torch

    from da3_ros.export.export_patches import export_friendly
    from da3_ros.export import fused_attention as fa
    from da3_ros.engines.graph import InferenceGraph

    graph = InferenceGraph(net.float().eval()).eval()
    feeds = example_inputs(n_views, hw, conditioned)
    args = tuple(torch.from_numpy(feeds[k]) for k in (IN_IMAGES, IN_EXTRINSICS, IN_INTRINSICS) if k in feeds)
    fusing = fa.fused_attention() if fused_attention else contextlib.nullcontext()

    def export(to) -> None:
        with export_friendly(), fusing, torch.no_grad():
            torch.onnx.export(graph, args, to, input_names=list(feeds), output_names=graph.names,
                              opset_version=OPSET, dynamo=False, do_constant_folding=True)

    if sum(p.numel() * p.element_size() for p in net.parameters()) <= LARGE_MODEL_BYTES:
        # In memory: a ViT-L's 1.3 GB written to disk and read back cost ~4 s of an ~19 s export (measured).
        buffer = io.BytesIO()
        export(buffer)
        return onnx.load_model_from_string(buffer.getvalue()), list(feeds), list(graph.names)
    work_dir.mkdir(parents=True, exist_ok=True)
    # Trace into a scratch directory: a model over 2 GB (giant, nested) comes out as one file per tensor.
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".export-") as scratch:
        traced = Path(scratch) / "traced.onnx"
        export(str(traced))
        return onnx.load(str(traced)), list(feeds), list(graph.names)  # with its external tensors


def _to_mixed_fp16(model, work_dir: Path):
    """Constant-fold the traced graph (ONNX Runtime's basic, EP-independent passes) and convert it to mixed fp16."""
    import onnx
    import onnxruntime as ort

    from da3_ros.export.fp16 import to_mixed_fp16

    src, folded = work_dir / ".fp32-for-fp16.onnx", work_dir / ".fp32-folded.onnx"
    # Weights in files beside both graphs: serialising a 1.3 GB protobuf costs ~3 s each way, raw bytes do not.
    weights = [p.with_name(p.name + ".weights") for p in (src, folded)]
    onnx.save(model, str(src), save_as_external_data=True, all_tensors_to_one_file=True, location=weights[0].name)
    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(folded)
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", weights[1].name)
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        return to_mixed_fp16(onnx.load(str(folded)))  # the weights read back in: the result is self-contained
    finally:
        for p in (src, folded, *weights):
            p.unlink(missing_ok=True)


def _end_with_the_parent() -> None:
    """As a backend's export child: die with the process that asked (it may be killed outright, SIGKILL)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # it died before the prctl took effect
        os._exit(1)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds the export: its scratch folder is removed on the way


def main(argv: list[str] | None = None) -> int:
    """Export graphs of one model (the torch-free backends run this in a subprocess: torch stays out of them).

    Several ``--views`` (with as many ``--out``) are exported one after the other by this one process, the
    model loaded once; each file, once complete, is announced on stdout (``WRITTEN_PREFIX`` + its path) so that
    the caller can take it while the next is exported.
    """
    _end_with_the_parent()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # `kill <pid>` of `da3-ros export` leaves no scratch
    p = argparse.ArgumentParser(prog="python -m da3_ros.export.onnx_export")
    p.add_argument("--model", required=True)
    p.add_argument("--views", type=int, nargs="+", required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--conditioned", action="store_true")
    p.add_argument("--precision", default="fp32", choices=list(EXPORT_PRECISIONS))
    p.add_argument("--fused-attention", action="store_true",
                   help="attention as ONNX Runtime's MultiHeadAttention (a graph for ONNX Runtime only)")
    p.add_argument("--out", nargs="+", required=True, help="one file per --views, in the same order")
    a = p.parse_args(argv)
    if len(a.out) != len(a.views):
        p.error(f"{len(a.views)} --views need as many --out files, got {len(a.out)}")
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    from da3_ros.models import load_model

    model = load_model(a.model)
    for n_views, out in zip(a.views, a.out):
        export_onnx(model.net, model.variant.name, Path(out), n_views, (a.height, a.width), a.conditioned,
                    a.precision, model.label, model.trained, a.fused_attention)
        print(f"{WRITTEN_PREFIX}{out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
