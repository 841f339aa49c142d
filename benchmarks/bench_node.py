"""The node against its engine: views/s of `da3-ros demo` and of the engine alone, interleaved in one run.

Each round times the engine alone (a fresh process: the demo's photos, whole sets, median of --repeats)
and then the node in `da3-ros demo` (rig_player at --rate-hz per camera -> depth_node -> recorder over Fast
DDS, all on the same cores), so that both see the same machine: on a shared VM the same forward drifts by
20 % within minutes, and only ratios taken side by side mean anything. The graphs of N and N - 1 views are
prepared first (as `da3-ros build-engine` would), so the node runs in its steady state. Run:
  source scripts/env.sh && python benchmarks/bench_node.py --cameras 2 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("SOH_000.png", "SOH_010.png", "SOH_000.png")
NETWORK_HW = (280, 504)  # the 1208x680 photos at process_res 504


def _engine_views_per_s(model: str, n: int, repeats: int, examples: Path, backend: str) -> dict:
    code = f"""
import json, statistics, time, cv2
from da3_ros.engines import FrameBatch, create_engine
e = create_engine({backend!r}, {model!r})
imgs = [cv2.imread({str(examples)!r} + "/" + p)[:, :, ::-1].copy() for p in {list(PHOTOS[:n])!r}]
b = FrameBatch(imgs)
e.infer(b)
sets, fwd = [], []
for _ in range({repeats}):
    t0 = time.perf_counter(); p = e.infer(b); sets.append(time.perf_counter() - t0); fwd.append(p.timing_s["forward"])
print(json.dumps({{"set_s": statistics.median(sets), "forward_s": statistics.median(fwd)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {"views_s": n / res["set_s"], "forward_ms": 1000 * res["forward_s"]}


def _node_views_per_s(model: str, n: int, seconds: float, rate_hz: float, examples: Path, domain: int,
                      transport: str, backend: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-node-") as out:
        res = subprocess.run(["da3-ros", "demo", "--examples", str(examples), "--cameras", str(n), "--backend",
                              backend, "--model", model, "--seconds", str(seconds), "--rate-hz", str(rate_hz),
                              "--out", out, "--domain-id", str(domain), "--transport", transport],
                             capture_output=True, text=True, check=True)
    def field(name: str) -> float:
        m = re.search(rf"^\s*{re.escape(name)}\s+([0-9.]+)", res.stdout, re.MULTILINE)
        if not m:
            raise RuntimeError(f"no {name!r} in the demo's summary:\n{res.stdout[-2000:]}")
        return float(m.group(1))
    return {"views_s": field("views/s"), "forward_ms": field("stage forward p50 (ms)")}


def _prepare(model: str, n: int, backend: str) -> None:
    from da3_ros.engines import create_fixed_shape_engine

    engine = create_fixed_shape_engine(backend, model)
    for views in sorted({n, max(1, n - 1)}):
        engine.prepare(views, NETWORK_HW)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="random:da3-small")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "openvino"],
                   help="the engine of both (precision auto: openvino takes bf16 where the CPU has it)")
    p.add_argument("--cameras", type=int, default=2, choices=[1, 2, 3])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate-hz", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--transport", default="both", choices=["raw", "compressed", "both"],
                   help="the player's and node's image transport (compressed: JPEG of quality 90)")
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "57")))
    p.add_argument("--examples", default=str(REPO.parent / "shared" / "data" / "da3_examples"))
    a = p.parse_args(argv)
    examples = Path(a.examples)
    _prepare(a.model, a.cameras, a.backend)
    print(f"# {platform.machine()} {os.cpu_count()} cores | {a.model} (UNTRAINED when random:) on {a.backend} | "
          f"{a.cameras} cameras of 1208x680 at {a.rate_hz} Hz | {time.strftime('%Y-%m-%d')}")
    transports = ["raw", "compressed"] if a.transport == "both" else [a.transport]
    print("| round | transport | engine alone views/s | node views/s | node / engine | engine forward ms | "
          "node forward p50 ms |")
    print("|---|---|---|---|---|---|---|")
    ratios: dict[str, list[float]] = {t: [] for t in transports}
    for r in range(1, a.rounds + 1):
        eng = _engine_views_per_s(a.model, a.cameras, a.repeats, examples, a.backend)
        for t in transports:
            node = _node_views_per_s(a.model, a.cameras, a.seconds, a.rate_hz, examples, a.domain_id, t, a.backend)
            ratios[t].append(node["views_s"] / eng["views_s"])
            print(f"| {r} | {t} | {eng['views_s']:.2f} | {node['views_s']:.2f} | {ratios[t][-1]:.0%} | "
                  f"{eng['forward_ms']:.0f} | {node['forward_ms']:.0f} |", flush=True)
    for t in transports:
        print(f"median node / engine, {t}: {statistics.median(ratios[t]):.0%} over {a.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
