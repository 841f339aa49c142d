"""Engine benchmark: every backend against upstream DA3, same weights, same real images, one run.

Rows per variant and backend, columns per N views (the example photos and a video frame):
  upstream inference() : depth_anything_3.api.DepthAnything3.inference as shipped (autocasts fp16 even on CPU)
  upstream raw fp32    : upstream's network forward in fp32 (with its always-computed aux ray branch)
  torch                : da3_ros TorchEngine (InferenceGraph: no aux branch, cached embeddings), fp32
  onnxruntime          : da3_ros OnnxRuntimeEngine on the exported graph (never imports torch), attention fused
  onnxruntime_plain    : the same on the plain-ONNX graph (attention as MatMul/Softmax/MatMul: TensorRT's graph)
  onnxruntime_int8     : the same on the int8 graph (precision int8: weight MatMuls dynamically quantized)
  torch_bf16           : TorchEngine in bf16 on the CPU (AVX512-BF16 / AMX where the CPU has them)
  openvino             : da3_ros OpenVinoEngine (CPU) on the plain fp32 graph, OpenVINO's f32 hint
  openvino_bf16        : the same with OpenVINO's bf16 hint (a CPU with AVX512-BF16 or AMX)
  openvino_int8        : the same with int8 weights (precision int8: NNCF weights-only), f32 activations
Each row runs in its own process, so peak RSS is that backend's at that N alone. Forward ms and whole-set ms
(preprocess + forward + postprocess) are medians of --repeats after a warm-up; ratios are against the two
upstream rows of the same variant. Start-up = process start to the first result (model load included; the
graph export and optimisation are excluded: done once, before, into the cache). Run:
  source scripts/env.sh && python benchmarks/bench_engine.py --variants da3-small,da3-base --views 1,2,4
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
T_PROCESS = time.perf_counter()
KINDS = ("upstream_api", "upstream_raw", "torch", "onnxruntime")
ENGINE_KINDS = {"torch": ("torch", "fp32"), "torch_bf16": ("torch", "bf16"), "onnxruntime": ("onnxruntime", "fp32"),
                "onnxruntime_int8": ("onnxruntime", "int8"),
                "onnxruntime_plain": ("onnxruntime", "fp32"), "openvino": ("openvino", "fp32"),
                "openvino_bf16": ("openvino", "bf16"),
                "openvino_int8": ("openvino", "int8")}  # kind -> (backend, precision)
PLAIN = "onnxruntime_plain"  # runs the given plain graph file
REFERENCE = {"onnxruntime_int8": "onnxruntime", "torch_bf16": "torch",
             "onnxruntime_plain": "onnxruntime", "openvino_bf16": "openvino", "openvino_int8": "openvino",
             "openvino": "onnxruntime"}  # lower precision (or the plain graph) -> its fp32 kind


def _images(examples: Path, n: int) -> list[np.ndarray]:
    import cv2

    pool = [cv2.imread(str(examples / "SOH_000.png")), cv2.imread(str(examples / "SOH_010.png"))]
    ok, frame = cv2.VideoCapture(str(examples / "robot_unitree.mp4")).read()
    pool.append(frame)
    return [np.ascontiguousarray(pool[i % 3][:, :, ::-1]) for i in range(n)]


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _shim_torchvision() -> None:
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:  # no CPU torchvision on PyPI: the three transforms upstream needs (test/shims/README.md)
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        sys.path.insert(0, str(REPO / "test" / "shims"))


def worker(kind: str, model: str, views: list[int], repeats: int, threads: int, examples: Path,
           cache_dir: str, dump: str = "") -> dict:
    """Time one kind in this process; return {N: (forward_s, set_s)}, peak RSS and start-up seconds."""
    rows: dict[int, tuple[float | None, float]] = {}
    startup = None
    if kind in ENGINE_KINDS:
        from da3_ros.engines import FrameBatch, create_engine

        backend, precision = ENGINE_KINDS[kind]
        for n in views:
            engine = create_engine(backend, _plain_graph(model, n, cache_dir) if kind == PLAIN else model,
                                   precision=precision, threads=threads, cache_dir=cache_dir)
            batch = FrameBatch(_images(examples, n))
            pred = engine.infer(batch)  # warm-up (and, for the first N, the start-up figure)
            startup = startup if startup is not None else time.perf_counter() - T_PROCESS
            fwd, whole = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                pred = engine.infer(batch)
                whole.append(time.perf_counter() - t0)
                fwd.append(pred.timing_s["forward"])
            rows[n] = (statistics.median(fwd), statistics.median(whole))
            if dump:  # for the accuracy columns: lower precision against fp32 on the same images
                np.savez(Path(dump) / f"{kind}_{n}.npz", depth=pred.depth, confidence=pred.confidence,
                         T_cam_world=pred.T_cam_world)
    else:
        import torch

        torch.set_num_threads(threads)
        _shim_torchvision()
        from depth_anything_3.api import DepthAnything3

        from da3_ros.models import load_model
        from da3_ros.core.preprocess import preprocess_batch

        loaded = load_model(model)
        api = DepthAnything3(model_name=loaded.variant.name)
        api.model.load_state_dict(loaded.net.state_dict())
        api.eval()
        for n in views:
            images = _images(examples, n)
            if kind == "upstream_api":
                def run(images=images):
                    return api.inference(images, process_res=504)
                run()
                rows[n] = (None, _median_s(run, repeats))
            else:
                x = torch.from_numpy(preprocess_batch(images, 504)[0])[None]

                @torch.inference_mode()
                def run(x=x):
                    return api.model(x, None, None, [], False, False, "first")
                run()
                rows[n] = (_median_s(run, repeats), _median_s(run, 1))
            startup = startup if startup is not None else time.perf_counter() - T_PROCESS
    return {"rows": {str(k): v for k, v in rows.items()}, "peak_rss_mb": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024, "startup_s": startup, "torch_loaded": "torch" in sys.modules}


def _plain_graph(model: str, n: int, cache_dir: str) -> str:
    from da3_ros.engines.cache import ArtifactCache
    from da3_ros.engines.onnx_source import OnnxSource

    return str(OnnxSource(model, ArtifactCache(cache_dir)).onnx_for(n, (280, 504), False))


def prepare_graphs(model: str, views: list[int], kinds: list[str], cache_dir: str, threads: int) -> None:
    """Export and optimise the graphs once, outside the timed processes."""
    from da3_ros.engines.cache import ArtifactCache
    from da3_ros.engines.onnx_source import OnnxSource
    from da3_ros.engines.onnxruntime_engine import optimized_for_cpu

    src = OnnxSource(model, ArtifactCache(cache_dir))
    for kind in kinds:
        backend, precision = ENGINE_KINDS.get(kind, ("", ""))
        if backend == "onnxruntime":
            for n in views:
                graph = src.onnx_for(n, (280, 504), False, precision, fused_attention=kind != PLAIN)
                optimized_for_cpu(graph, src.cache)
        if backend == "openvino":  # the compile (and its gate) once, into the cache, in a child process (this
            for n in views:          # one's peak RSS is inherited by every worker): start-up then loads it
                code = ("from da3_ros.engines import create_engine; create_engine('openvino', %r, precision=%r, "
                        "cache_dir=%r, threads=%d).prepare(%d, (280, 504), False)"
                        % (model, precision, cache_dir, threads, n))
                subprocess.run([sys.executable, "-c", code], check=True)


def _print_rows(variant: str, res: dict[tuple[str, int], dict]) -> None:
    """One table row per (kind, N), with the ratios to the upstream rows of the same run."""
    for (kind, n), r in res.items():
        fwd, whole = r["rows"][str(n)]
        api = res.get(("upstream_api", n), {}).get("rows", {}).get(str(n), [None, None])[1]
        raw = res.get(("upstream_raw", n), {}).get("rows", {}).get(str(n), [None])[0]
        print(f"| {variant} | {kind} | {n} | {'-' if fwd is None else f'{fwd * 1e3:.0f}'} | "
              f"{whole * 1e3:.0f} | {n / whole:.2f} | {'-' if not api else f'{whole / api:.2f}x'} | "
              f"{'-' if not raw or fwd is None else f'{fwd / raw:.2f}x'} | {r['peak_rss_mb']:.0f} | "
              f"{r['startup_s']:.1f} |", flush=True)


def _accuracy_rows(variant: str, res: dict[tuple[str, int], dict], dump: Path) -> list[str]:
    """Lower-precision kinds against their fp32 kind on the same images: correlation and max relative error."""
    rows = []
    for (kind, n) in res:
        ref = REFERENCE.get(kind)
        if ref is None or (ref, n) not in res:
            continue
        low, full = np.load(dump / f"{kind}_{n}.npz"), np.load(dump / f"{ref}_{n}.npz")
        for field in ("depth", "confidence", "T_cam_world"):
            a, b = low[field].astype(np.float64).ravel(), full[field].astype(np.float64).ravel()
            corr, rel = np.corrcoef(a, b)[0, 1], np.abs(a - b).max() / np.abs(b).max()
            rows.append(f"| {variant} | {kind} | {n} | {field} | {corr:.6f} | {rel:.2e} |")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="da3-small,da3-base")
    p.add_argument("--views", default="1,2,4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "da3_ros"))
    p.add_argument("--examples", default=str(REPO.parent / "shared" / "data" / "da3_examples"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--dump", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    views = [int(v) for v in a.views.split(",")]
    if a.worker:
        print(json.dumps(worker(a.worker, a.model, views, a.repeats, a.threads, Path(a.examples), a.cache_dir,
                                a.dump)))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    print(f"# {platform.machine()} {os.cpu_count()} cores, {a.threads} threads | network 504x280 | seeded random "
          f"weights (speed does not depend on their values) | median of {a.repeats} after a warm-up")
    print("| variant | backend | N | forward ms | whole set ms | views/s | vs upstream inference() | "
          "forward vs upstream raw fp32 | peak RSS MB | start-up s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    accuracy = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as dump:
        for variant in a.variants.split(","):
            model = f"random:{variant}@0"
            prepare_graphs(model, views, a.kinds.split(","), a.cache_dir, a.threads)
            res: dict[tuple[str, int], dict] = {}
            for kind in a.kinds.split(","):
                for n in views:  # one process per row: its peak RSS is that backend's at that N alone
                    cmd = [sys.executable, __file__, "--worker", kind, "--model", model, "--views", str(n),
                           "--repeats", str(a.repeats), "--threads", str(a.threads), "--cache-dir", a.cache_dir,
                           "--examples", a.examples, "--dump", dump]
                    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if out.returncode:
                        print(f"| {variant} | {kind} | {n} | failed: {out.stderr.strip().splitlines()[-1]} |")
                        continue
                    res[kind, n] = json.loads(out.stdout.strip().splitlines()[-1])
            _print_rows(variant, res)
            accuracy += _accuracy_rows(variant, res, Path(dump))
    if accuracy:
        print("\n| variant | precision | N | field | correlation vs fp32 | max relative error vs fp32 |")
        print("|---|---|---|---|---|---|")
        print("\n".join(accuracy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
