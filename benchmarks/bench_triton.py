"""Triton benchmark: the same engine run locally and behind a Triton server on localhost, per set, one run.

Rows per rig (N views of the example photos/video at the network size 280x504):
  local onnxruntime : OnnxRuntimeEngine in this process (the node's default backend here)
  triton localhost  : TritonEngine -> gRPC -> `da3-ros serve` (pytriton's tritonserver hosting the same
                      OnnxRuntimeEngine on the same cached graph) -> back
Columns: whole set (preprocess + forward + postprocess) median ms; the hop = the client's round trip minus
the server's own compute time (Triton's statistics: compute_infer), i.e. serialisation, gRPC, Triton's queue
and its Python-backend proxy; bytes sent and received per set, against the raw camera images a remote node
would need (bgr8, the photos' 1208x680). Server and client share this machine's cores: run nothing else.
  source scripts/env.sh && python benchmarks/bench_triton.py --views 1,2,3 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HW = (280, 504)


def _images(examples: Path, n: int) -> list[np.ndarray]:
    import cv2

    pool = [cv2.imread(str(examples / "SOH_000.png")), cv2.imread(str(examples / "SOH_010.png"))]
    ok, frame = cv2.VideoCapture(str(examples / "robot_unitree.mp4")).read()
    pool.append(cv2.resize(frame, (1208, 680)))  # one camera size: one network size for every N
    return [np.ascontiguousarray(pool[i % 3][:, :, ::-1]) for i in range(n)]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_compute_ns(client, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]["inference_stats"]
    return int(stats["compute_infer"].get("ns", 0)), int(stats["success"].get("count", 0))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="random:da3-small@0")
    p.add_argument("--views", default="1,2,3")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--examples", default=str(REPO.parent / "shared" / "data" / "da3_examples"))
    a = p.parse_args()
    import tritonclient.grpc as grpcclient

    from da3_ros.engines import FrameBatch, create_engine
    from da3_ros.engines.triton_engine import TritonSettings

    views = [int(v) for v in a.views.split(",")]
    cache = tempfile.mkdtemp(prefix="da3-bench-triton-")
    local = create_engine("onnxruntime", a.model, cache_dir=cache)
    for n in views:  # export once, before either side is timed
        local.prepare(n, HW)
    grpc_port = _port()
    log = open(Path(cache) / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "da3_ros.offline.cli", "serve", "--model", a.model,
                               "--cache-dir", cache,
                               "--grpc-port", str(grpc_port), "--http-port", str(_port()), "--metrics-port",
                               str(_port()), "--height", str(HW[0]), "--width", str(HW[1]), "--views", str(views[0]),
                               *(["--also-views", *map(str, views[1:])] if views[1:] else [])],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"localhost:{grpc_port}"
        client = grpcclient.InferenceServerClient(url)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            try:
                if client.is_model_ready("da3"):
                    break
            except Exception:
                pass
            time.sleep(0.5)
        remote = create_engine("triton", a.model, triton=TritonSettings(url=url, timeout_s=120))
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {a.model}; "
              f"network {HW[1]}x{HW[0]}; median of {a.repeats} after a warm-up; server and client on this machine")
        print("| views | local onnxruntime ms | triton localhost ms | ratio | hop ms | hop % | sent MB | "
              "received MB | raw bgr8 images MB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n in views:
            batch = FrameBatch(_images(Path(a.examples), n))
            local.infer(batch)
            remote.infer(batch)  # warm-up (the server's first set of a shape loads its runner)
            t_local, t_remote, hops = [], [], []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                local.infer(batch)
                t_local.append(time.perf_counter() - t0)
                ns0, c0 = _server_compute_ns(client, "da3")
                t0 = time.perf_counter()
                pred = remote.infer(batch)
                t_remote.append(time.perf_counter() - t0)
                ns1, c1 = _server_compute_ns(client, "da3")
                for _ in range(50):  # the server books a request just after answering it
                    if c1 == c0 + 1:
                        break
                    time.sleep(0.02)
                    ns1, c1 = _server_compute_ns(client, "da3")
                assert c1 == c0 + 1, (c0, c1)
                hops.append(pred.timing_s["forward"] - (ns1 - ns0) / 1e9)
            lo, re, hop = (statistics.median(v) * 1e3 for v in (t_local, t_remote, hops))
            raw = sum(im.nbytes for im in batch.images_rgb) / 1e6
            print(f"| {n} | {lo:.0f} | {re:.0f} | {re / lo:.2f} | {hop:.1f} | {100 * hop / re:.1f} | "
                  f"{remote.last_request_bytes / 1e6:.2f} | {remote.last_reply_bytes / 1e6:.2f} | {raw:.2f} |")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
