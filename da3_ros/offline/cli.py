"""``da3-ros``: the same core as the node, for people without ROS.

``da3-ros infer --model random:da3-small IMAGE... --out result.npz`` runs ONE multi-view forward over all
images and writes depth, confidence, poses and intrinsics, plus a colourised PNG per view.
``da3-ros export`` writes the ONNX graph for a rig; ``da3-ros build-engine`` builds its TensorRT engine ahead
of time (minutes on a robot) into the cache the node uses. ``da3-ros bag`` runs a recorded ROS 2 bag through
the node's core into a bag of results; ``da3-ros media`` does the same for videos and image folders.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from da3_ros.core import preprocess
from da3_ros.core.image_io import read_rgb
from da3_ros.core.params import Transport, choices
from da3_ros.engines import BACKENDS, PRECISIONS
from da3_ros.offline.offline_cli import add_offline_parsers

_LOG = logging.getLogger("da3_ros.offline.cli")


def _read_rgb(path: str) -> np.ndarray:
    try:
        return read_rgb(path)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None


def _parse_K(text: str | None, n: int) -> np.ndarray | None:
    if not text:
        return None
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--intrinsics wants fx,fy,cx,cy in pixels, got {text!r}") from None
    return np.repeat(np.array([[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]]), n, axis=0)


def cmd_infer(args: argparse.Namespace) -> int:
    from da3_ros.engines import FrameBatch, create_engine
    from da3_ros.offline.visualize import depth_panel

    images = [_read_rgb(p) for p in args.images]
    from da3_ros.engines.triton_engine import TritonSettings

    engine = create_engine(args.backend, args.model, device=args.device, precision=args.precision,
                           threads=args.threads, cache_dir=args.cache_dir, process_res=args.process_res,
                           process_res_method=args.process_res_method,
                           triton=TritonSettings(url=args.triton_url, model_name=args.triton_model),
                           metric_model=args.metric_model)
    t0 = time.perf_counter()
    pred = engine.infer(FrameBatch(images, K_cam=_parse_K(args.intrinsics, len(images))))
    dt = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in dict(
        depth=pred.depth, confidence=pred.confidence, sky_mask=pred.sky_mask, T_cam_world=pred.T_cam_world,
        K_proc=pred.K_proc, depth_scale=pred.depth_scale).items() if v is not None}
    np.savez_compressed(out, **arrays, is_metric=pred.is_metric, scale_source=pred.scale_source, scale=pred.scale,
                        model=engine.label, trained=engine.trained,
                        images=np.array(args.images))
    units = "m" if pred.is_metric else "relative"
    png_dir = Path(args.png_dir) if args.png_dir else out.parent
    for i, path in enumerate(args.images):
        conf = None if pred.confidence is None else pred.confidence[i]
        text = f"{engine.label} | view {i} | depth ({units}) | confidence"
        png = png_dir / f"{Path(path).stem}_depth.png"
        cv2.imwrite(str(png), depth_panel(pred.rgb_proc[i], pred.depth[i], conf, text))
        d = pred.depth[i][np.isfinite(pred.depth[i])]
        print(f"view {i}: {path} -> {png} | {pred.hw[1]}x{pred.hw[0]} depth {d.min():.3f}..{d.max():.3f} {units}")
    print(f"{len(images)} views in ONE forward: {dt:.2f} s ({len(images) / dt:.2f} views/s) | model {engine.label}"
          f" | wrote {out}")
    return 0


def _rig_shape(args: argparse.Namespace) -> tuple[int, int]:
    """Network size (H, W) of the rig: from --height/--width, or planned from camera image sizes."""
    if args.height and args.width:
        return args.height, args.width
    if not args.camera_size:
        raise SystemExit("give the network size (--height H --width W) or the cameras' sizes (--camera-size WxH ...)")
    hws = []
    for text in args.camera_size:
        try:
            w, h = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--camera-size wants WIDTHxHEIGHT, got {text!r}") from None
        hws.append((h, w))
    return preprocess.plan_batch(hws, args.process_res, args.process_res_method)[0].proc_hw


def cmd_export(args: argparse.Namespace) -> int:
    from da3_ros.export.onnx_export import export_onnx
    from da3_ros.models import load_model

    if args.openvino and not args.triton_repo:
        raise SystemExit("da3-ros export: --openvino writes a Triton repository model: give --triton-repo DIR too "
                         "(the node's backend openvino compiles the graph itself)")
    hw = _rig_shape(args)
    views = args.views or max(1, len(args.camera_size or []))
    model = load_model(args.model)
    if args.triton_repo:
        return _export_triton_repo(args, model, views, hw)
    out = Path(args.out) if args.out else Path(f"{model.variant.name}_{views}v_{hw[1]}x{hw[0]}_{args.precision}.onnx")
    export_onnx(model.net, model.variant.name, out, views, hw, args.conditioned, args.precision, model.label,
                model.trained, args.fused_attention)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {model.label}, {views} views at {hw[1]}x{hw[0]}, "
          f"{args.precision}{', pose-conditioned' if args.conditioned else ''}")
    return 0


def _export_triton_repo(args: argparse.Namespace, model, views: int, hw: tuple[int, int]) -> int:
    """The fp32 graph as an onnxruntime model, plus a TensorRT plan model where TensorRT is installed."""
    import tempfile

    from da3_ros.export.onnx_export import export_onnx
    from da3_ros.engines.tensorrt_engine import build_plan, tensorrt_status
    from da3_ros.export.triton_repo import write_openvino_model, write_repository

    repo = Path(args.triton_repo)
    with tempfile.TemporaryDirectory(prefix=".da3-export-", dir=repo.parent if repo.parent.exists() else None) as tmp:
        graph = export_onnx(model.net, model.variant.name, Path(tmp) / "graph.onnx", views, hw, args.conditioned,
                            "fp32", model.label, model.trained)
        plan, (trt_ok, trt_why) = None, tensorrt_status()
        if trt_ok:
            fp16 = export_onnx(model.net, model.variant.name, Path(tmp) / "graph_fp16.onnx", views, hw,
                               args.conditioned, "fp16", model.label, model.trained)
            plan = build_plan(fp16)
        written = write_repository(graph, repo, args.triton_name, args.triton_tensorrt, plan)
        if args.openvino:
            written.append(write_openvino_model(graph, repo, args.triton_name))
    for d in written:
        print(f"wrote Triton model {d.name} in {repo}: {model.label}, {views} views at {hw[1]}x{hw[0]}")
    if plan is None:
        print(f"no TensorRT plan model ({trt_why}): a plan belongs to the GPU and TensorRT version that built it, "
              f"so build it on the server (`da3-ros build-engine` there), or pass --triton-tensorrt to let the "
              "onnxruntime backend use TensorRT")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from da3_ros.engines import create_fixed_shape_engine
    from da3_ros.export.triton_serve import ServeShapeError, rig_shapes, serve

    engine = create_fixed_shape_engine(args.backend, args.model, precision=args.precision, threads=args.threads,
                                       cache_dir=args.cache_dir)
    prepare = []  # the shapes served; a graph file brings its own
    if args.views or args.camera_size or args.height or args.width:
        hw = _rig_shape(args)
        views = args.views or max(1, len(args.camera_size or []))  # as export: 1 view unless told
        prepare = rig_shapes([views, *(args.also_views or [])], hw, args.conditioned)  # 1 view: plain
    try:
        serve(engine, args.name, args.grpc_port, args.http_port, args.metrics_port, prepare, bind=args.bind,
              on_ready=lambda: print(f"ready: model {args.name!r} ({engine.label}) on gRPC {args.bind}:"
                                     f"{args.grpc_port}", flush=True))
    except ServeShapeError as exc:  # the shapes asked for: a user error, named with its fix
        raise SystemExit(f"da3-ros serve: {exc}") from None
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from da3_ros.engines import BackendUnavailable, create_fixed_shape_engine

    hw = _rig_shape(args)
    views = args.views or max(1, len(args.camera_size or []))
    try:
        engine = create_fixed_shape_engine(args.backend, args.model, precision=args.precision,
                                           cache_dir=args.cache_dir, device=args.device)
    except BackendUnavailable as exc:
        raise SystemExit(str(exc)) from None
    t0 = time.perf_counter()
    engine.prepare(views, hw, args.conditioned)
    print(f"{engine.backend} engine for {engine.label}, {views} views at {hw[1]}x{hw[0]} ready in "
          f"{time.perf_counter() - t0:.1f} s (cache: {engine.source.cache.root})")
    return 0


def _add_rig_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint: HF repo id, local dir, variant name, random:<variant>")
    p.add_argument("--views", type=int, help="number of cameras N (default: number of --camera-size)")
    p.add_argument("--camera-size", nargs="+", metavar="WxH", help="each camera's image size, e.g. 1280x720")
    p.add_argument("--height", type=int, help="network height (multiple of 14) instead of --camera-size")
    p.add_argument("--width", type=int, help="network width (multiple of 14) instead of --camera-size")
    p.add_argument("--process-res", type=int, default=504)
    p.add_argument("--process-res-method", default="upper_bound_resize", choices=preprocess.METHODS)
    p.add_argument("--conditioned", action="store_true", help="with pose-conditioning inputs (known extrinsics)")


def cmd_demo(args: argparse.Namespace) -> int:
    from da3_ros.offline.demo import run_demo

    return run_demo(Path(args.examples), Path(args.out), args.model, args.seconds, args.rate_hz, args.domain_id,
                    args.cameras, args.backend, args.transport)


def build_parser() -> argparse.ArgumentParser:
    """The ``da3-ros`` command line: one sub-command per tool."""
    p = argparse.ArgumentParser(prog="da3-ros", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_infer, _add_export, _add_serve, _add_build_engine, _add_demo, add_offline_parsers):
        add(sub)
    return p


def _add_infer(sub: Any) -> None:
    """``da3-ros infer``: one multi-view forward over image files."""
    inf = sub.add_parser("infer", help="one multi-view forward over image files")
    inf.add_argument("images", nargs="+", help="image files, one per view")
    inf.add_argument("--model", required=True,
                     help="HF repo id, local dir (config.json + model.safetensors), variant name, "
                          "or random:<variant>[@seed]")
    inf.add_argument("--out", default="out/result.npz", help="npz file to write")
    inf.add_argument("--png-dir", help="where to write the PNGs (default: beside --out)")
    inf.add_argument("--backend", default="torch", choices=BACKENDS)
    inf.add_argument("--device", default="auto", help="auto (the backend's own), cpu, cuda, cuda:<n>")
    inf.add_argument("--precision", default="auto", choices=PRECISIONS)
    inf.add_argument("--threads", type=int, default=0, help="CPU threads (0: the backend's default)")
    inf.add_argument("--cache-dir", help="exported graphs and engines (default: ~/.cache/da3_ros)")
    inf.add_argument("--process-res", type=int, default=504)
    inf.add_argument("--process-res-method", default="upper_bound_resize", choices=preprocess.METHODS)
    inf.add_argument("--metric-model", default="",
                     help="a DA3METRIC-LARGE checkpoint paired with an any-view --model: depth and poses in metres")
    inf.add_argument("--triton-url", default="localhost:8001", help="server gRPC address (backend triton)")
    inf.add_argument("--triton-model", default="da3", help="model name on the server (backend triton)")
    inf.add_argument("--intrinsics", help="fx,fy,cx,cy of all images (pixels); needed for metres with da3metric")
    inf.set_defaults(func=cmd_infer)


def _add_export(sub: Any) -> None:
    """``da3-ros export``: the ONNX graph of a rig."""
    exp = sub.add_parser("export", help="write the ONNX graph of a model for a rig (N views, one network size)")
    _add_rig_args(exp)
    exp.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                     help="fp16: mixed precision for TensorRT (normalisations and softmax stay fp32); int8: "
                          "ONNX Runtime CPU only (weight MatMuls dynamically quantized)")
    exp.add_argument("--fused-attention", action="store_true",
                     help="attention as ONNX Runtime's MultiHeadAttention: less memory, ONNX Runtime only (not "
                          "TensorRT, not fp16)")
    exp.add_argument("--out", help="the .onnx file (default: <variant>_<N>v_<W>x<H>_<precision>.onnx)")
    exp.add_argument("--triton-repo", metavar="DIR", help="write a Triton model repository instead of --out")
    exp.add_argument("--triton-name", default="da3", help="model name in the repository (the node's triton.model)")
    exp.add_argument("--triton-tensorrt", action="store_true",
                     help="let Triton's onnxruntime backend run the graph through TensorRT (FP16)")
    exp.add_argument("--openvino", action="store_true",
                     help="with --triton-repo: also <name>_openvino, the graph for Triton's OpenVINO backend (CPU "
                          "inference servers; OpenVINO IR where openvino is installed here, else ONNX)")
    exp.set_defaults(func=cmd_export)


def _add_serve(sub: Any) -> None:
    """``da3-ros serve``: a Triton server hosting the model."""
    srv = sub.add_parser("serve", help="a Triton Inference Server here (pytriton) hosting the model, for "
                                       "backend triton")
    _add_rig_args(srv)
    srv.add_argument("--name", default="da3", help="model name clients ask for (the node's triton.model)")
    srv.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"])
    srv.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8"])
    srv.add_argument("--threads", type=int, default=0, help="CPU threads (0: the backend's default)")
    srv.add_argument("--cache-dir", help="exported graphs and engines (default: ~/.cache/da3_ros)")
    srv.add_argument("--grpc-port", type=int, default=8001)
    srv.add_argument("--http-port", type=int, default=8000)
    srv.add_argument("--metrics-port", type=int, default=8002)
    srv.add_argument("--also-views", type=int, nargs="+", metavar="N",
                     help="also serve these view counts at the same size (e.g. N-1 for a silent camera); "
                          "--conditioned applies to each count of 2 or more, 1 view is always served plain "
                          "(a single camera is never pose-conditioned)")
    srv.add_argument("--bind", default="127.0.0.1",
                     help="address gRPC, HTTP and metrics listen on (0.0.0.0: every interface, for other machines)")
    srv.set_defaults(func=cmd_serve)


def _add_build_engine(sub: Any) -> None:
    """``da3-ros build-engine``: a rig's engine ahead of time."""
    bld = sub.add_parser("build-engine", help="export and build a rig's engine ahead of time into the cache")
    _add_rig_args(bld)
    bld.add_argument("--backend", default="tensorrt", choices=["tensorrt", "onnxruntime", "openvino"])
    bld.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "int8"],
                     help="auto: the backend's (tensorrt fp16, onnxruntime fp32, openvino bf16 where the CPU has "
                          "it), as the node resolves it")
    bld.add_argument("--device", default="auto",
                     help="as the node's device (openvino: CPU, GPU, NPU; the compiled model is per device)")
    bld.add_argument("--cache-dir", help="where the node looks (default: ~/.cache/da3_ros)")
    bld.set_defaults(func=cmd_build_engine)


def _add_demo(sub: Any) -> None:
    """``da3-ros demo``: the node on a recorded rig."""
    demo = sub.add_parser("demo", help="run the node on a recorded 3-camera rig; print a summary, write pictures")
    demo.add_argument("--examples", required=True, help="folder with robot_unitree.mp4, SOH_000.png, SOH_010.png")
    demo.add_argument("--model", default="random:da3-small")
    demo.add_argument("--backend", default="auto", choices=BACKENDS)
    demo.add_argument("--out", default="out/demo")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to record after the first set")
    demo.add_argument("--rate-hz", type=float, default=10.0, help="camera rate of the player")
    demo.add_argument("--domain-id", type=int, default=42)
    demo.add_argument("--cameras", type=int, default=3, help="1: left photo, 2: + right photo, 3: + front video")
    demo.add_argument("--transport", default="raw", choices=choices(Transport),
                      help="compressed: the player streams JPEG on <camera>/image_raw/compressed, the node decodes")
    demo.set_defaults(func=cmd_demo)

def main(argv: list[str] | None = None) -> int:
    """Entry point of ``da3-ros``; user errors end with their message, not a traceback."""
    from da3_ros.engines import BackendUnavailable, EngineUnavailable
    from da3_ros.engines.onnx_source import GraphMismatch
    from da3_ros.engines.triton_engine import TritonModelError
    from da3_ros.models import CheckpointError

    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BackendUnavailable, EngineUnavailable, GraphMismatch, TritonModelError, CheckpointError,
            FileNotFoundError) as exc:
        raise SystemExit(f"da3-ros {args.command}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
