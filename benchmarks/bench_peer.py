"""Our engines (ONNX Runtime fp32/int8, OpenVINO fp32/bf16/int8) against the C++ peer depth-anything.cpp (f32, q8_0).

One run, the same images.

The peer is built locally from its public source with its own CMake defaults and never committed; give its CLI
and two GGUF files converted from the SAME seeded random weights as ours (its own converter and quantizer; the
commands are in BENCHMARKS.md). Rows alternate ours / the peer per N, so both see the same machine. Threads
are the same (--threads) for both, and so are the images (the example photos, 1208x680 -> 504x280).

- ours: the bench_engine worker (a fresh process per row; --ours names its kinds): forward median and whole-set
  median, peak RSS. Graphs are exported (and OpenVINO's compiles gated) once before, into --cache-dir.
- peer N = 1: its own bench hook (`depth --repeat R --pose`: load once, median per forward with the camera
  decoder, as ours); peak RSS of that process.
- peer N = 2: its CLI has no repeat for several views, so each of R processes is timed whole; its forward is
  that wall time minus its load time (measured in the N = 1 row) and reading the images.
Run:
  source scripts/env.sh && python benchmarks/bench_peer.py --peer-cli <build>/examples/cli/da3-cli
      --peer-f32 small-f32.gguf --peer-q8 small-q8_0.gguf --model random:da3-small@0   (one line)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("SOH_000.png", "SOH_010.png")


def _wait_rss(cmd: list[str]) -> tuple[str, float, float]:
    """Run ``cmd``; (stdout, wall seconds, its peak RSS in MB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err[-500:]}")
    return out, wall, usage.ru_maxrss / 1024


def _ours(kind: str, model: str, n: int, repeats: int, threads: int, examples: Path, cache_dir: str) -> dict:
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_engine.py"), "--worker", kind, "--model", model,
           "--views", str(n), "--repeats", str(repeats), "--threads", str(threads), "--examples", str(examples),
           "--cache-dir", cache_dir]
    out, _, rss = _wait_rss(cmd)
    res = json.loads(out.strip().splitlines()[-1])
    fwd, whole = res["rows"][str(n)]
    return {"forward_ms": 1e3 * fwd, "set_ms": 1e3 * whole, "rss_mb": rss}


def _peer(cli: str, gguf: str, n: int, repeats: int, threads: int, examples: Path, load_ms: float | None) -> dict:
    images = [str(examples / p) for p in PHOTOS[:n]]
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        if n == 1:
            out, _, rss = _wait_rss([cli, "depth", "--model", gguf, "--input", images[0], "--threads", str(threads),
                                     "--repeat", str(repeats), "--pose", f"{tmp}/pose.json"])
            m = re.search(r"load=([0-9.]+)ms infer=([0-9.]+)ms", out)
            if not m:
                raise RuntimeError(f"no timing in the peer's output: {out[-500:]}")
            return {"forward_ms": float(m.group(2)), "set_ms": float(m.group(2)), "rss_mb": rss,
                    "load_ms": float(m.group(1))}
        walls, rss = [], 0.0
        for _ in range(repeats):
            cmd = [cli, "depth", "--model", gguf, "--threads", str(threads), "--out-prefix", f"{tmp}/out"]
            for img in images:
                cmd += ["--input", img]
            _, wall, r = _wait_rss(cmd)
            walls.append(1e3 * wall)
            rss = max(rss, r)
        wall_ms = statistics.median(walls)
        return {"forward_ms": wall_ms - (load_ms or 0.0), "set_ms": wall_ms, "rss_mb": rss}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-cli", required=True)
    p.add_argument("--peer-f32", required=True)
    p.add_argument("--peer-q8", required=True)
    p.add_argument("--model", default="random:da3-small@0", help="the weights the GGUF files were converted from")
    p.add_argument("--views", default="1,2")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--examples", default=str(REPO.parent / "shared" / "data" / "da3_examples"))
    p.add_argument("--ours", default="onnxruntime,onnxruntime_int8,openvino,openvino_bf16,openvino_int8",
                   help="bench_engine kinds of ours, each a row beside the peer's")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "da3_ros"))
    a = p.parse_args(argv)
    examples = Path(a.examples)
    ours = a.ours.split(",")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_engine import prepare_graphs

    prepare_graphs(a.model, [int(v) for v in a.views.split(",")], ours, a.cache_dir, a.threads)
    print(f"# {os.cpu_count()} cores, {a.threads} threads | {a.model} (UNTRAINED random weights) | 504x280 | "
          f"median of {a.repeats} | {time.strftime('%Y-%m-%d %H:%M')}")
    print("| N | engine | forward ms | whole set (peer N=2: process) ms | peak RSS MB | forward vs peer q8_0 |")
    print("|---|---|---|---|---|---|")
    load_ms: dict[str, float] = {}
    for n in [int(v) for v in a.views.split(",")]:
        rows = {f"ours {kind}": _ours(kind, a.model, n, a.repeats, a.threads, examples, a.cache_dir)
                for kind in ours if "int8" not in kind}  # fp32 and bf16 rows, then the peer's f32
        rows["peer depth-anything.cpp f32"] = _peer(a.peer_cli, a.peer_f32, n, a.repeats, a.threads, examples,
                                                    load_ms.get("f32"))
        rows.update({f"ours {kind}": _ours(kind, a.model, n, a.repeats, a.threads, examples, a.cache_dir)
                     for kind in ours if "int8" in kind})
        rows["peer depth-anything.cpp q8_0"] = _peer(a.peer_cli, a.peer_q8, n, a.repeats, a.threads, examples,
                                                     load_ms.get("q8"))
        for name, key in (("peer depth-anything.cpp f32", "f32"), ("peer depth-anything.cpp q8_0", "q8")):
            if "load_ms" in rows[name]:
                load_ms[key] = rows[name]["load_ms"]
        q8 = rows["peer depth-anything.cpp q8_0"]["forward_ms"]
        for name, r in rows.items():
            print(f"| {n} | {name} | {r['forward_ms']:.0f} | {r['set_ms']:.0f} | {r['rss_mb']:.0f} | "
                  f"{r['forward_ms'] / q8:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
