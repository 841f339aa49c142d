"""What frames that will be dropped cost the node: CPU per received frame, and the forward with and without load.

Publishes N cameras of 1208x680 rgb8 (the example photo) at --rate-hz each from this process (pre-serialized,
so the publisher costs little), runs ``depth_node`` as its own process (a fresh one per phase), and reads the
node's CPU time from /proc and its counters from /diagnostics:
  no output subscribers: the forward is skipped, so CPU / frames received = the cost of a frame that is
                         received, synchronised and dropped;
  a multiview_depth subscriber, at 1 Hz and at the full rate: the forward's p50 without and with that load.
``--transport compressed`` (or ``both``): the same with cameras.<name>.transport: compressed, the photo as a
JPEG CompressedImage on <name>/image_raw/compressed, plus the CPU per PROCESSED frame of turning its bytes into
an Image (deserialise + decode: the node's own da3_ros.ros.transport code, timed in this process).
Run: source scripts/env.sh && python benchmarks/bench_input.py --cameras 3 --rate-hz 30 --transport both
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _decode_cpu_s(transport, data: bytes, repeats: int = 20) -> float:
    """CPU seconds per frame of the node's own decode path (da3_ros.ros.transport) on these serialised bytes."""
    transport.decode(data)  # first call: imports (OpenCV), allocations
    c0 = time.process_time()
    for _ in range(repeats):
        transport.decode(data)
    return (time.process_time() - c0) / repeats


def _rows(a, transport: str, phase, received) -> None:
    """The table's rows for one transport: every frame dropped, then subscribed at 1 Hz and at the full rate."""
    v0, v1, cpu_s = phase(a.rate_hz, False, transport)
    frames = received(v0, v1)
    print(f"| {transport} | {a.rate_hz:g} Hz in, no subscribers (every frame dropped) | {frames:.0f} | {cpu_s:.2f} | "
          f"{1e3 * cpu_s / frames:.3f} | {100 * cpu_s / (a.seconds + 1.5):.1f} | - |", flush=True)
    for rate in (1.0, a.rate_hz):
        v0, v1, cpu_s = phase(rate, True, transport)
        print(f"| {transport} | {rate:g} Hz in, multiview_depth subscribed | {received(v0, v1):.0f} | "
              f"{cpu_s:.2f} | - | {100 * cpu_s / (a.seconds + 1.5):.1f} | {v1.get('forward_ms.p50', float('nan')):.0f} "
              f"({v1.get('sets_done', 0) - v0.get('sets_done', 0):.0f} sets) |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--rate-hz", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--model", default="random:da3-small@0")
    p.add_argument("--domain-id", type=int, default=77)
    p.add_argument("--examples", default=str(REPO.parent / "shared" / "data" / "da3_examples"))
    p.add_argument("--transport", choices=("raw", "compressed", "both"), default="raw")
    p.add_argument("--jpeg-quality", type=int, default=90)
    a = p.parse_args()
    os.environ.update(ROS_DOMAIN_ID=str(a.domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                      FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds_profile.xml"))
    import cv2
    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage

    from da3_ros.ros import conversions as conv

    from std_msgs.msg import Header
    from da3_ros.ros.diagnostics import numeric_values
    from da3_ros.msg import MultiViewDepth
    from da3_ros.ros.ros_main import package_executable
    from da3_ros.ros.transport import JPEG_FORMAT, input_transport

    rgb = np.ascontiguousarray(cv2.imread(str(Path(a.examples) / "SOH_000.png"))[:, :, ::-1])
    names = [f"cam{i}" for i in range(a.cameras)]
    transports = ["raw", "compressed"] if a.transport == "both" else [a.transport]
    tmp = Path(tempfile.mkdtemp())
    for t in transports:
        (tmp / f"{t}.yaml").write_text(yaml.safe_dump({"da3_depth": {"ros__parameters": {
            "model": a.model, "backend": a.backend, "camera_names": names, "tf.mode": "off",
            "cameras": {n: {"transport": t} for n in names}}}}))
    rclpy.init()
    node = rclpy.create_node("bench_input")
    diags: list = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    sets: list = []
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, a.jpeg_quality])
    templates = {"raw": conv.rgb_to_image(rgb, Header(frame_id="cam")),
                 "compressed": CompressedImage(header=Header(frame_id="cam"), format=JPEG_FORMAT,
                                               data=jpeg.tobytes())}
    pubs = {t: [node.create_publisher(type(templates[t]), input_transport(t).topic(f"{n}/image_raw"),
                                      qos_profile_sensor_data) for n in names] for t in transports}

    def values() -> dict[str, float]:
        return numeric_values(diags[-1]) if diags else {}

    def drive(seconds: float, rate_hz: float, transport: str) -> None:
        period, t_next, end = 1.0 / rate_hz, time.monotonic(), time.monotonic() + seconds
        template = templates[transport]
        while time.monotonic() < end:
            template.header.stamp = node.get_clock().now().to_msg()
            data = serialize_message(template)  # one serialization per set of N cameras
            for pub in pubs[transport]:
                pub.publish(data)
            t_next += period
            while time.monotonic() < t_next:
                rclpy.spin_once(node, timeout_sec=max(0.0, t_next - time.monotonic()))

    def phase(rate_hz: float, subscribe: bool, transport: str) -> tuple[dict, dict, float]:
        """A fresh node driven at rate_hz; (diagnostics at start, at end, node CPU seconds in between)."""
        sub = node.create_subscription(MultiViewDepth, "multiview_depth", sets.append, 5) if subscribe else None
        proc = subprocess.Popen([package_executable("depth_node"), "--ros-args", "--params-file",
                                 str(tmp / f"{transport}.yaml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            diags.clear()
            while pubs[transport][0].get_subscription_count() == 0 or not diags:
                rclpy.spin_once(node, timeout_sec=0.1)
            drive(5.0, rate_hz, transport)  # warm-up: discovery, the first (slow) sets
            v0, c0 = values(), _cpu_s(proc.pid)
            drive(a.seconds, rate_hz, transport)
            drive(1.5, rate_hz, transport)  # one more diagnostics period
            return v0, values(), _cpu_s(proc.pid) - c0
        finally:
            if sub is not None:
                node.destroy_subscription(sub)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def received(v0: dict, v1: dict) -> float:
        return sum(v1[f"frames_in.{n}"] - v0.get(f"frames_in.{n}", 0) for n in names)

    try:
        print(f"# depth_node {a.backend}, {a.cameras} cameras 1208x680 ({', '.join(transports)}; JPEG quality "
              f"{a.jpeg_quality}: {jpeg.size / 1e3:.0f} kB vs {len(templates['raw'].data) / 1e6:.1f} MB raw), "
              f"{os.cpu_count()} cores; each row a fresh node, {a.seconds:g} s after a 5 s warm-up")
        print("| transport | phase | frames received | node CPU s | CPU ms per received frame | "
              "node CPU % of a core | forward p50 ms |")
        print("|---|---|---|---|---|---|---|")
        for t in transports:
            _rows(a, t, phase, received)
        print("\n| transport | CPU ms per processed frame: CDR bytes -> Image (deserialise + decode), this process |")
        print("|---|---|")
        for t in transports:
            print(f"| {t} | {1e3 * _decode_cpu_s(input_transport(t), serialize_message(templates[t])):.3f} |")
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
