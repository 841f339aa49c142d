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

``--video``: no node, no DDS. What a video camera (``transport: ffmpeg``) costs per frame on ONE core (this process
pinned to one CPU while it measures, one FFmpeg decoder thread as the node's): the frames of the example video
scaled to each size, encoded by PyAV's libx264 / libx265 as ffmpeg_image_transport's publisher does by default
(its defaults: encoder libx264, no encoder_av_options so the encoder's preset "medium", gop_size 10,
max_b_frames 0; bit_rate 8242880 as its README states), serialised as FFMPEGPacket, then fed to the node's own
``da3_ros.ros.video.StreamDecoder`` (deserialise + gate + FFmpeg decode + rgb24 + Image): every frame is decoded,
whatever the synchroniser later keeps. A dropped packet (refused by the gate: before a keyframe, after a gap)
costs deserialise + gate only. JPEG (``transport: compressed``, quality 90) for comparison: only the frames of a
processed set are decoded. Run: taskset -c 1 python benchmarks/bench_input.py --video
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
from ffmpeg_image_transport_msgs.msg import FFMPEGPacket

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


def _example_frames(path: Path, w: int, h: int, n: int) -> list[np.ndarray]:
    """``n`` rgb24 frames of the example video scaled to w x h (from its start again when it is shorter)."""
    import av

    out: list[np.ndarray] = []
    while len(out) < n:
        with av.open(str(path)) as src:
            for f in src.decode(video=0):
                out.append(f.reformat(width=w, height=h, format="rgb24").to_ndarray())
                if len(out) == n:
                    break
    return out


def _encode(frames: list[np.ndarray], codec: str, gop: int, bit_rate: int) -> list[tuple[int, bool, bytes]]:
    """(pts, keyframe, Annex B payload) per frame, encoded as ffmpeg_image_transport's default publisher does."""
    from fractions import Fraction

    import av

    ctx = av.CodecContext.create({"h264": "libx264", "hevc": "libx265"}[codec], "w")
    ctx.width, ctx.height, ctx.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    ctx.time_base, ctx.framerate, ctx.gop_size, ctx.max_b_frames = Fraction(1, 30), Fraction(30), gop, 0
    ctx.bit_rate = bit_rate
    if codec == "hevc":
        ctx.options = {"x265-params": "log-level=error"}
    packets = []
    for n, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = n
        packets += [(int(p.pts), bool(p.is_keyframe), bytes(p)) for p in ctx.encode(frame)]
    packets += [(int(p.pts), bool(p.is_keyframe), bytes(p)) for p in ctx.encode(None)]
    if [p[0] for p in packets] != list(range(len(frames))):
        raise RuntimeError(f"{codec}: packets out of display order (B-frames?): the transport sends none")
    return packets


def _cpu_per_item_s(fn, items: list, passes: int = 3) -> float:
    """Median over ``passes`` of the CPU seconds per item of ``fn(items)`` (which builds its own state)."""
    times = []
    for _ in range(passes):
        c0 = time.process_time()
        fn(items)
        times.append((time.process_time() - c0) / len(items))
    return float(np.median(times))


def _video_rows(a, w: int, h: int, cpu: int) -> None:
    """The table rows of one size: H.264 and H.265 through the node's decoder, JPEG through its transport."""
    import av
    import cv2
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    from da3_ros.core.video_stream import VideoDrop
    from da3_ros.ros.transport import COMPRESSED, FFMPEG, JPEG_FORMAT

    frames = _example_frames(Path(a.examples) / "robot_unitree.mp4", w, h, a.frames)
    allowed = os.sched_getaffinity(0)
    for codec in ("h264", "hevc"):
        packets = _encode(frames, codec, a.gop, a.bit_rate)
        msgs = [serialize_message(FFMPEGPacket(header=Header(frame_id="cam"), width=w, height=h, encoding=codec,
                                               pts=pts, flags=int(key), data=data)) for pts, key, data in packets]

        def node_path(items):
            dec = FFMPEG.stream()
            assert not [d for d in map(dec.feed, items) if not hasattr(d, "encoding")], "a frame was not decoded"

        def ffmpeg_only(items, codec=codec):
            ctx = av.CodecContext.create(codec, "r")
            ctx.thread_count = 1
            for _, _, data in items:
                ctx.decode(av.Packet(data))

        def refused(items):
            dec = FFMPEG.stream()
            assert all(dec.feed(d) is VideoDrop.BEFORE_KEYFRAME for d in items)

        os.sched_setaffinity(0, {cpu})
        try:
            full, only = _cpu_per_item_s(node_path, msgs), _cpu_per_item_s(ffmpeg_only, packets)
            drop = _cpu_per_item_s(refused, [m for m, p in zip(msgs, packets) if not p[1]])
        finally:
            os.sched_setaffinity(0, allowed)
        kb = sum(len(p[2]) for p in packets) / len(packets) / 1e3
        print(f"| {w}x{h} | {'H.264 libx264' if codec == 'h264' else 'H.265 libx265'} | {kb:.1f} | {1e3 * full:.2f} "
              f"| {1e3 * only:.2f} | **{100 * full * 30:.0f} %** | {1e3 * drop:.3f} |", flush=True)
    jpegs = [serialize_message(CompressedImage(header=Header(frame_id="cam"), format=JPEG_FORMAT, data=cv2.imencode(
        ".jpg", f[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())) for f in frames]
    os.sched_setaffinity(0, {cpu})
    try:
        jpeg = _cpu_per_item_s(lambda items: [COMPRESSED.decode(d) for d in items], jpegs)
    finally:
        os.sched_setaffinity(0, allowed)
    kb = sum(map(len, jpegs)) / len(jpegs) / 1e3
    print(f"| {w}x{h} | JPEG q90 (compressed) | {kb:.1f} | {1e3 * jpeg:.2f} | - | {100 * jpeg * 30:.0f} % "
          "(if every frame were processed) | 0 (a dropped JPEG is not decoded) |", flush=True)


def _video_main(a) -> int:
    """``--video``: the decode cost table (markdown) on one core."""
    import subprocess as sp

    import av
    import cv2

    cpu = a.cpu if a.cpu >= 0 else max(os.sched_getaffinity(0))
    model = next((line.split(":", 1)[1].strip() for line in sp.run(["lscpu"], capture_output=True, text=True)
                  .stdout.splitlines() if line.startswith("Model name")), "?")
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
    simd = " ".join(f for f in ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni") if f in flags)
    print(f"# {model} ({simd}), CPU {cpu} only while measuring, {time.strftime('%Y-%m-%d')}; PyAV {av.__version__} "
          f"(FFmpeg {av.ffmpeg_version_info}), OpenCV {cv2.__version__}; {a.frames} frames of robot_unitree.mp4, "
          f"gop {a.gop}, no B-frames, {a.bit_rate} bit/s, preset medium; CPU time, median of 3 passes")
    print("| size | stream | kB per frame | ms per frame: node's decoder (deserialise + gate + FFmpeg + rgb24 + Image) "
          "| FFmpeg decode alone | share of one core at 30 Hz | ms per dropped packet (refused by the gate) |")
    print("|---|---|---|---|---|---|---|")
    for size in a.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        _video_rows(a, w, h, cpu)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", action="store_true", help="the video decode cost table (no node)")
    p.add_argument("--sizes", default="1024x576,1920x1080")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--gop", type=int, default=10)
    p.add_argument("--bit-rate", type=int, default=8242880)
    p.add_argument("--cpu", type=int, default=-1, help="the one CPU measured on (default: the last allowed)")
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
    if a.video:
        return _video_main(a)
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
