"""Temporal window cost: views/s and peak memory for temporal.keyframes K = 0, 2, 4 at N = 1 and 2 cameras.

Each row is its own process (so its peak RSS is that configuration's alone): the offline setup the bag and
media commands use (``OfflineSetup``: the node's config, rig and per-set core), fed the example robot video
as N moving cameras (camera i sees frame t + 3 i), at network resolution --res. K = 0 is today's behaviour
(each set alone); with K > 0 every forward is the N current views + up to K keyframes, the keyframe rule
opened (every set moves enough) so the window is full. Random weights do not align reliably (the chain then
restarts and empties the store); the window's cost does not depend on its alignment succeeding, so the
benchmark opens the alignment gates too and counts only sets whose window was full. Reported: forward and
whole-set medians (preprocess + forward + chain + outputs), views/s of the CURRENT cameras (what the robot
gets), the window's views, peak RSS, and the cost against K = 0 at the same N in the same run. Run:
  source scripts/env.sh && python benchmarks/bench_temporal.py --backends torch,onnxruntime
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO.parent / "shared" / "data" / "da3_examples" / "robot_unitree.mp4"
EVERY_MOVE = {"temporal.min_translation_rel": 1e-6, "temporal.min_rotation_deg": 1e-6, "temporal.min_interval_s": 0.0}


def _frames(n: int, step: int = 3) -> list[np.ndarray]:
    import cv2

    from da3_ros.core.image_io import bgr_to_rgb

    cap = cv2.VideoCapture(str(VIDEO))
    out: list[np.ndarray] = []
    k = 0
    while len(out) < n:
        ok, bgr = cap.read()
        if not ok:
            raise SystemExit(f"{VIDEO} has fewer than {n * step} frames")
        if k % step == 0:
            out.append(bgr_to_rgb(bgr))
        k += 1
    cap.release()
    return out


def _one(args: argparse.Namespace) -> dict:
    """One configuration in this process: warm up until the window is full, then time --repeats sets."""
    from da3_ros.core.processor import CameraFrame, Processed
    from da3_ros.core.temporal.chain import ChainConfig
    from da3_ros.offline.setup import OfflineSetup

    n, k = args.n, args.k
    cams = [f"cam{i}" for i in range(n)]
    values = {"model": args.model, "backend": args.backend, "process_res": args.res, "camera_names": cams,
              "temporal.keyframes": k, **EVERY_MOVE}
    if args.cache:
        values["engine_cache_dir"] = args.cache
    setup = OfflineSetup(values)
    setup.load()
    tracker = setup.rig.temporal if setup.rig is not None else None
    if tracker is not None:  # see the module: the cost of a window, whether or not random weights align
        tracker.chain.cfg = replace(ChainConfig(), min_inlier_fraction=0.0, max_residual_rel=float("inf"))
    video = _frames(k + args.repeats + 3 + 3 * n)
    forward, whole, windows = [], [], []
    t_ns = 1_700_000_000 * 10**9
    for t in range(k + 2 + args.repeats):
        t_ns += 100_000_000
        frames = [CameraFrame(video[t + 3 * i], t_ns, f"{c}_optical_frame") for i, c in enumerate(cams)]
        t0 = time.perf_counter()
        done = setup.frames.process(frames)
        dt = time.perf_counter() - t0
        if not isinstance(done, Processed):
            raise SystemExit(f"set {t} dropped: {done}")
        n_window = done.outputs.result.window_views or n
        if t >= k + 2 and n_window == n + k:  # warmed up, window full
            forward.append(done.timing_s.get("forward", float("nan")))
            whole.append(dt)
            windows.append(n_window)
    if not whole:
        raise SystemExit(f"N={n} K={k}: no set had a full window")
    whole_s = statistics.median(whole)
    return {"backend": args.backend, "n": n, "k": k, "window": windows[0], "sets": len(whole),
            "forward_ms": 1000 * statistics.median(forward), "whole_ms": 1000 * whole_s, "views_s": n / whole_s,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:da3-small@0")
    p.add_argument("--backends", default="torch")
    p.add_argument("--views", default="1,2")
    p.add_argument("--keyframes", default="0,2,4")
    p.add_argument("--res", type=int, default=504)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--cache", default="", help="engine_cache_dir for fixed-shape backends (graphs per N + K)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(_one(args)))
        return 0
    rows = []
    for backend in args.backends.split(","):
        for n in map(int, args.views.split(",")):
            for k in map(int, args.keyframes.split(",")):
                cmd = [sys.executable, __file__, "--one", "--backend", backend, "--n", str(n), "--k", str(k),
                       "--model", args.model, "--res", str(args.res), "--repeats", str(args.repeats),
                       "--cache", args.cache]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{backend} N={n} K={k} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"  done {backend} N={n} K={k}", file=sys.stderr)
    base = {(r["backend"], r["n"]): r for r in rows if r["k"] == 0}
    print(f"# {args.model} at process_res {args.res}, {platform.processor() or platform.machine()}, "
          f"medians of {args.repeats} full-window sets")
    print("| backend | N | K | window views | forward ms | whole set ms | views/s (current) | vs K=0 | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = base.get((r["backend"], r["n"]))
        ratio = f"{r['whole_ms'] / ref['whole_ms']:.2f}x" if ref else "-"
        print(f"| {r['backend']} | {r['n']} | {r['k']} | {r['window']} | {r['forward_ms']:.0f} | {r['whole_ms']:.0f} "
              f"| {r['views_s']:.2f} | {ratio} | {r['rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
