"""What frames that will be dropped cost the node: CPU per received frame, and the forward with and without load.

Publishes N cameras of 1208x680 rgb8 (the example photo) at --rate-hz each from this process (pre-serialized,
so the publisher costs little), runs ``depth_node`` as its own process, and reads the node's CPU time from
/proc and its counters from /diagnostics:
  phase 1, no output subscribers: the forward is skipped, so CPU / frames received = the cost of a frame
           that is received, synchronised and dropped;
  phase 2, a multiview_depth subscriber: forward p50 under the full input load, then at 1 Hz input.
Run: source scripts/env.sh && python benchmarks/bench_input.py --cameras 3 --rate-hz 30
"""
from __future__ import annotations

import argparse
import os
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--rate-hz", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--model", default="random:da3-small@0")
    p.add_argument("--domain-id", type=int, default=77)
    p.add_argument("--examples", default=str(REPO.parent / "shared" / "data" / "da3_examples"))
    a = p.parse_args()
    os.environ.update(ROS_DOMAIN_ID=str(a.domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                      FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds_profile.xml"))
    import cv2
    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from da3_ros import conversions as conv
    from da3_ros.msg import MultiViewDepth
    from da3_ros.ros_main import package_executable

    rgb = np.ascontiguousarray(cv2.imread(str(Path(a.examples) / "SOH_000.png"))[:, :, ::-1])
    names = [f"cam{i}" for i in range(a.cameras)]
    params = Path(tempfile.mkdtemp()) / "node.yaml"
    params.write_text(yaml.safe_dump({"da3_depth": {"ros__parameters": {
        "model": a.model, "backend": a.backend, "camera_names": names, "tf.mode": "off"}}}))
    node_proc = subprocess.Popen([package_executable("depth_node"), "--ros-args", "--params-file", str(params)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node("bench_input")
    pubs = [node.create_publisher(Image, f"{n}/image_raw", qos_profile_sensor_data) for n in names]
    diags: list = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    template = conv.rgb_to_image(rgb, conv.Header(frame_id="cam"))

    def values() -> dict[str, float]:
        out = {}
        for kv in (diags[-1].status[0].values if diags else []):
            try:
                out[kv.key] = float(kv.value)
            except ValueError:
                pass
        return out

    def drive(seconds: float, rate_hz: float) -> None:
        period, t_next, end = 1.0 / rate_hz, time.monotonic(), time.monotonic() + seconds
        while time.monotonic() < end:
            template.header.stamp = node.get_clock().now().to_msg()
            data = serialize_message(template)  # one serialization per set of N cameras
            for pub in pubs:
                pub.publish(data)
            t_next += period
            while time.monotonic() < t_next:
                rclpy.spin_once(node, timeout_sec=max(0.0, t_next - time.monotonic()))

    try:
        while node.count_subscribers(f"{names[0]}/image_raw") == 0:
            rclpy.spin_once(node, timeout_sec=0.1)
        drive(3.0, a.rate_hz)  # warm-up: discovery, first diagnostics
        v0, c0 = values(), _cpu_s(node_proc.pid)
        drive(a.seconds, a.rate_hz)
        drive(1.5, a.rate_hz)
        v1, c1 = values(), _cpu_s(node_proc.pid)
        frames = sum(v1[f"frames_in.{n}"] - v0.get(f"frames_in.{n}", 0) for n in names)
        cpu_ms = (c1 - c0) * 1e3
        print(f"# depth_node {a.backend}, {a.cameras} cameras 1208x680 rgb8 at {a.rate_hz:g} Hz, "
              f"{os.cpu_count()} cores")
        print("| phase | frames received | node CPU s | CPU ms per received frame | node CPU % of a core | "
              "forward p50 ms |")
        print("|---|---|---|---|---|---|")
        print(f"| no subscribers (every frame dropped) | {frames:.0f} | {cpu_ms / 1e3:.2f} | {cpu_ms / frames:.3f} | "
              f"{100 * cpu_ms / 1e3 / (a.seconds + 1.5):.1f} | - |", flush=True)
        sets: list = []
        node.create_subscription(MultiViewDepth, "multiview_depth", sets.append, 5)
        # 1 Hz first: its < 50 sets fill the diagnostics window alone; the loaded phase then replaces them all
        for rate, label in ((1.0, "forward under 1 Hz input"), (a.rate_hz, f"forward under {a.rate_hz:g} Hz input")):
            drive(8.0, rate)
            n0, f0 = values().get("sets_done", 0), values()
            drive(a.seconds, rate)
            v = values()
            print(f"| {label} | {sum(v[f'frames_in.{n}'] - f0.get(f'frames_in.{n}', 0) for n in names):.0f} | - | - | "
                  f"- | {v.get('forward_ms.p50', float('nan')):.0f} ({v.get('sets_done', 0) - n0:.0f} sets) |",
                  flush=True)
    finally:
        node_proc.terminate()
        node_proc.wait(timeout=20)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
