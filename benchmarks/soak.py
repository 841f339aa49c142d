"""Soak: 3 cameras at 30 Hz into the slower engine for a long time; memory flat, latency bounded, no crash.

Publishes three cameras (the two example photos and frames of the example video, 1208x680 rgb8 with
camera_info) at --rate-hz from this process, pre-serialised so that publishing costs little; runs
``depth_node`` (its own process, backend auto) with every output subscribed (per-camera depth and clouds,
the fused cloud, the result message, TF); samples the node's resident memory from /proc and its counters from
/diagnostics. After --warmup-s it checks, and prints:
  - resident memory: no growth: no --window-s window's peak above the first window's, nor the last above their
    median, by more than 5 % (--rss-tolerance); the memory a forward needs comes and goes within a set, and a
    start-up peak the allocator gives back is not a leak;
  - latency (image stamp to the result's arrival here, for every result received after the warm-up): p50 and
    max bounded by --max-latency-forwards of the run's slowest forward + 1 s (relative: a loaded machine is
    slower in every stage alike; the node's own /diagnostics window would still hold start-up sets);
  - drops: counted (superseded sets, frames dropped), never silently lost; errors 0;
  - the node alive to the end, and a SIGINT that ends it with exit code 0 (everything released).
Exit status 0 when all hold. CI runs a 25 s form at process_res 280 (test/test_soak.py); the 10-minute figures
are in BENCHMARKS.md.
  source scripts/env.sh && python benchmarks/soak.py --seconds 600   (warm-up 120 s by default)
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAMERAS = ("left", "right", "front")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _frames(examples: Path, n_video: int) -> dict[str, list[np.ndarray]]:
    import cv2

    photos = [cv2.imread(str(examples / name)) for name in ("SOH_000.png", "SOH_010.png")]
    cap = cv2.VideoCapture(str(examples / "robot_unitree.mp4"))
    video = []
    while len(video) < n_video:
        ok, frame = cap.read()
        if not ok:
            break
        video.append(cv2.resize(frame, (1208, 680)))
    return {"left": [photos[0]], "right": [photos[1]], "front": video}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0, help="measured time after the warm-up")
    p.add_argument("--warmup-s", type=float, default=120.0,
                   help="counted from the first result (an export or a model load before it is not warm-up)")
    p.add_argument("--startup-timeout-s", type=float, default=600.0, help="the first result must come within this")
    p.add_argument("--process-res", type=int, default=0, help="the node's process_res (0: the node's default)")
    p.add_argument("--rate-hz", type=float, default=30.0)
    p.add_argument("--model", default="random:da3-small@0")
    p.add_argument("--backend", default="auto")
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "88")))
    p.add_argument("--rss-tolerance", type=float, default=0.05)
    p.add_argument("--window-s", type=float, default=10.0, help="resident memory: one peak per window")
    p.add_argument("--max-latency-forwards", type=float, default=3.0,
                   help="latency bound: this many of the run's slowest forwards (node's /diagnostics) + 1 s; the "
                        "newest-set policy needs at most 2 (one in flight, then its own)")
    p.add_argument("--cache-dir", default="", help="engine cache (default: the node's)")
    p.add_argument("--examples", default=str(REPO.parent / "shared" / "data" / "da3_examples"))
    a = p.parse_args(argv)
    os.environ.update(ROS_DOMAIN_ID=str(a.domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                      FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds_profile.xml"))
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    from da3_ros.ros import conversions as conv

    from std_msgs.msg import Header
    from da3_ros.ros.diagnostics import numeric_values
    from da3_ros.core.geometry import pinhole_K
    from da3_ros.msg import MultiViewDepth
    from da3_ros.ros.ros_main import package_executable

    frames = _frames(Path(a.examples), 60)
    tmp = Path(tempfile.mkdtemp(prefix="da3-soak-"))
    params = {"model": a.model, "backend": a.backend, "camera_names": list(CAMERAS), "diagnostics_period_s": 1.0}
    if a.cache_dir:
        params["engine_cache_dir"] = a.cache_dir
    if a.process_res:
        params["process_res"] = a.process_res
    (tmp / "node.yaml").write_text(yaml.safe_dump({"da3_depth": {"ros__parameters": params}}))
    rclpy.init()
    node = rclpy.create_node("soak_driver")
    img_pubs = [node.create_publisher(Image, f"{c}/image_raw", qos_profile_sensor_data) for c in CAMERAS]
    info_pubs = [node.create_publisher(CameraInfo, f"{c}/camera_info", qos_profile_sensor_data) for c in CAMERAS]
    got = {"sets": 0, "clouds": 0, "tf": 0}
    diags: list = []
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.append(m), 10)
    latencies_s: list[tuple[float, float]] = []  # (seconds since the first result, image stamp to arrival here)
    clock = {"t0": float("inf")}  # the first result's arrival (monotonic s)

    def on_result(msg) -> None:
        got["sets"] += 1
        if got["sets"] == 1:  # the warm-up starts now: start-up (model load, a graph export) is not measured
            clock["t0"] = time.monotonic()
        latencies_s.append((time.monotonic() - clock["t0"],
                            (node.get_clock().now().nanoseconds - conv.stamp_to_ns(msg.header.stamp)) / 1e9))

    node.create_subscription(MultiViewDepth, "multiview_depth", on_result, 2)
    node.create_subscription(PointCloud2, "points_fused", lambda m: got.__setitem__("clouds", got["clouds"] + 1), 2)
    for c in CAMERAS:
        node.create_subscription(Image, f"{c}/depth/image", lambda m: None, 2)
        node.create_subscription(PointCloud2, f"{c}/points", lambda m: None, 2)
    node.create_subscription(TFMessage, "/tf", lambda m: got.__setitem__("tf", got["tf"] + 1), 10)
    # One serialised template per camera and frame; only the stamp changes per tick (re-serialised, cheap).
    headers = {c: Header(frame_id=f"{c}_optical_frame") for c in CAMERAS}
    templates = {c: [conv.rgb_to_image(np.ascontiguousarray(f[:, :, ::-1]), headers[c]) for f in fr]
                 for c, fr in frames.items()}
    infos = {c: conv.make_camera_info(pinhole_K(1208, 680, 60.0), (680, 1208), headers[c]) for c in CAMERAS}

    def values() -> dict[str, float]:
        return numeric_values(diags[-1]) if diags else {}

    proc = subprocess.Popen([package_executable("depth_node"), "--ros-args", "--params-file", str(tmp / "node.yaml")],
                            stdout=open(tmp / "node.log", "w"), stderr=subprocess.STDOUT)
    rss: list[tuple[float, float]] = []  # (seconds since start, MB)
    tick, t_start = 0, time.monotonic()
    clock["t0"] = t_start + a.startup_timeout_s  # until the first result: the start-up deadline
    next_sample = t_start
    ok = True
    try:
        period, t_next = 1.0 / a.rate_hz, time.monotonic()
        while time.monotonic() < clock["t0"] + (a.warmup_s + a.seconds if got["sets"] else 0.0):
            if proc.poll() is not None:
                print(f"FAIL: depth_node exited with {proc.returncode} after {time.monotonic() - t_start:.0f} s")
                ok = False
                break
            stamp = node.get_clock().now().to_msg()
            for i, c in enumerate(CAMERAS):
                msg = templates[c][tick % len(templates[c])]
                msg.header.stamp = stamp
                img_pubs[i].publish(serialize_message(msg))
                infos[c].header.stamp = stamp
                info_pubs[i].publish(infos[c])
            tick += 1
            rss.append((time.monotonic() - clock["t0"], _rss_mb(proc.pid)))  # every tick: the peaks are what count
            if time.monotonic() >= next_sample:
                next_sample += 1.0
                v = values()
            t_next += period
            while time.monotonic() < t_next:
                rclpy.spin_once(node, timeout_sec=max(0.0, t_next - time.monotonic()))
            if time.monotonic() - t_next > 1.0:  # this driver fell behind: do not burst to catch up
                t_next = time.monotonic()
        v = values()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "killed after 30 s"
        else:
            code = proc.returncode
        node.destroy_node()
        rclpy.try_shutdown()
    n_windows = int(a.seconds // a.window_s)
    measured_lat = [lat for t, lat in latencies_s if t > a.warmup_s]
    after = [max((mb for t, mb in rss if a.warmup_s + k * a.window_s < t <= a.warmup_s + (k + 1) * a.window_s),
                 default=float("nan")) for k in range(n_windows)]
    after = [mb for mb in after if mb == mb]  # window peaks (NaN: an empty window, e.g. the node died)
    med = statistics.median(after) if after else float("nan")
    spread = max(abs(mb / med - 1) for mb in after) if after else float("nan")
    # A leak grows: no window may rise above the first window's peak, nor the last above the median, by more
    # than the tolerance. Memory that falls (an allocator returning a start-up peak) is not a leak.
    growth = max([mb / after[0] - 1 for mb in after] + [after[-1] / med - 1]) if after else float("nan")
    in_rate = sum(v.get(f"frames_in.{c}", 0) for c in CAMERAS) / max(time.monotonic() - t_start, 1e-9)
    rows = [
        ("measured", f"{a.seconds:.0f} s after {a.warmup_s:.0f} s warm-up from the first result; {a.rate_hz:g} Hz x "
                     f"{len(CAMERAS)} cameras 1208x680; {a.model} on {a.backend}, process_res "
                     f"{a.process_res or 'default'}; {os.cpu_count()} cores"),
        ("frames received by the node", f"{sum(v.get(f'frames_in.{c}', 0) for c in CAMERAS):.0f} "
                                        f"({in_rate:.1f}/s)"),
        ("sets done / results received", f"{v.get('sets_done', 0):.0f} / {got['sets']}"),
        ("sets superseded / frames dropped (counted)", f"{v.get('sets_superseded', 0):.0f} / "
                                                       f"{v.get('frames_dropped', 0):.0f}"),
        ("errors / bad input", f"{v.get('errors', 0):.0f} / {v.get('bad_input', 0):.0f}"),
        ("forward p50", f"{v.get('forward_ms.p50', float('nan')):.0f} ms"),
        ("latency after the warm-up, image stamp to result received: p50 / max",
         f"{statistics.median(measured_lat) if measured_lat else float('nan'):.2f} s / "
         f"{max(measured_lat) if measured_lat else float('nan'):.2f} s"),
        (f"resident memory, peak per {a.window_s:g} s window: median, min, max",
         f"{med:.0f} MB, {min(after, default=0):.0f}, {max(after, default=0):.0f} "
         f"(max deviation {100 * spread:.1f} %, growth {100 * growth:+.1f} %)"),
        ("resident memory peak, first window / last window", f"{after[0] if after else 0:.0f} MB / "
                                                             f"{after[-1] if after else 0:.0f} MB"),
        ("exit on SIGINT", str(code)),
    ]
    print(f"resident memory peak per {a.window_s:g} s window after the warm-up (MB): "
          + " ".join(f"{mb:.0f}" for mb in after))
    print("| soak | value |\n|---|---|")
    forward_max_s = v.get("forward_ms.max", float("nan")) / 1e3
    max_latency_s = a.max_latency_forwards * forward_max_s + 1.0  # relative to this run's forward (CI loads vary)
    rows.append(("latency bound", f"{a.max_latency_forwards:g} x forward max ({forward_max_s:.2f} s) + 1 s = "
                                  f"{max_latency_s:.2f} s"))
    for k, val in rows:
        print(f"| {k} | {val} |")
    checks = {
        "node alive to the end": ok,
        "results published": got["sets"] > 0 and v.get("sets_done", 0) > 0,
        f"memory flat within {100 * a.rss_tolerance:.0f} %": bool(after) and growth <= a.rss_tolerance,
        f"latency max <= {max_latency_s:.2f} s": bool(measured_lat) and max(measured_lat) <= max_latency_s,
        "no errors": v.get("errors", 1) == 0,
        "clean exit on SIGINT": code == 0,
    }
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}: {name}")
    if not all(checks.values()):
        print(f"node log: {tmp / 'node.log'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
