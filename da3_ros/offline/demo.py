"""``da3-ros demo``: the node on a recorded rig, end to end, with a summary and pictures.

Starts ``rig_player`` (the example video and photos as a 3-camera rig with camera_info) and ``depth_node`` as
separate processes, records their outputs over DDS for a while, then prints rates, per-stage latency, drops
and peak memory and writes colourised depth, confidence and a rendered view of the fused cloud.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from da3_ros.ros import conversions as conv
from da3_ros.ros.ros_main import package_executable
from da3_ros.ros.transport import RAW, InputTransport, input_transport
from da3_ros.offline.visualize import caption, colorize


def render_cloud(xyz: np.ndarray, rgb: np.ndarray | None, size=(480, 640)) -> np.ndarray:
    """A perspective view of the cloud from behind and above the reference camera (BGR image)."""
    img = np.zeros(size + (3,), np.uint8)
    if len(xyz) == 0:
        return img
    centre = np.median(xyz, axis=0)
    span = np.percentile(np.linalg.norm(xyz - centre, axis=1), 90) + 1e-6
    # virtual camera: pulled back along -z and raised (-y), looking at the cloud's centre, tilted down 25 deg
    a = np.radians(25)
    R = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    eye = centre + np.array([0.0, -1.2 * span, -2.5 * span])
    p = (xyz - eye) @ R.T
    keep = p[:, 2] > 1e-3
    p, colors = p[keep], (rgb[keep] if rgb is not None else np.full((keep.sum(), 3), 200, np.uint8))
    f = 0.9 * size[1]
    u = (f * p[:, 0] / p[:, 2] + size[1] / 2).astype(int)
    v = (f * p[:, 1] / p[:, 2] + size[0] / 2).astype(int)
    ok = (u >= 0) & (u < size[1]) & (v >= 0) & (v < size[0])
    order = np.argsort(-p[ok, 2])  # far first, near points drawn last
    img[v[ok][order], u[ok][order]] = colors[ok][order][:, ::-1]
    return img


_RIG = ("left", "image:SOH_000.png"), ("right", "image:SOH_010.png"), ("front", "video:robot_unitree.mp4")


def run_demo(examples: Path, out: Path, model: str, seconds: float, rate_hz: float, domain_id: int,
             cameras: int = 3, backend: str = "auto", transport: str = "raw") -> int:
    """Run the node and the player on the example rig, record ``seconds`` after the first set, summarise."""
    import rclpy

    out.mkdir(parents=True, exist_ok=True)
    if not 1 <= cameras <= len(_RIG):
        raise SystemExit(f"--cameras must be 1..{len(_RIG)}, got {cameras}")
    # 1208x680 photos first (the size peers were measured at), then the robot video
    names = [n for n, _ in _RIG[:cameras]]
    sources = [f"{kind}:{examples / name}" for _, source in _RIG[:cameras] for kind, name in [source.split(":")]]
    _write_configs(out, names, sources, model, backend, rate_hz, transport)
    t_start = time.monotonic()
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    rclpy.init()
    rec = _Recorder(names, transport)  # subscribed before the player starts: the first sets' frames are recorded
    procs = _start(out, domain_id)
    print(f"[demo] player: {names} at {rate_hz} Hz ({transport}); node: {model} on backend {backend}; "
          f"recording {seconds:.0f} s after the first set")
    try:
        startup_s = rec.record(seconds, procs, out) - t_start
    finally:
        _stop(procs)
    if not rec.sets or not rec.diags:
        raise SystemExit("no result arrived; see the logs in " + str(out))
    _write_pictures(_picture_set(rec.sets, rec.camera_frames), rec.fused, out, rec.camera_frames, rec.transport)
    _print_summary(rec.sets, rec.latency_s, {kv.key: kv.value for kv in rec.diags[-1].status[0].values}, out,
                   startup_s)
    rec.node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _write_configs(out: Path, names: list[str], sources: list[str], model: str, backend: str,
                   rate_hz: float, transport: str = "raw") -> None:
    import yaml

    cameras = {name: {"transport": transport} for name in names}
    (out / "node.yaml").write_text(yaml.safe_dump({"da3_depth": {"ros__parameters": {
        "model": model, "backend": backend, "camera_names": names, "cloud": {"stride": 2}, "cameras": cameras}}}))
    (out / "player.yaml").write_text(yaml.safe_dump({"rig_player": {"ros__parameters": {
        "camera_names": names, "sources": sources, "rate_hz": rate_hz, "transport": transport}}}))


def _start(out: Path, domain_id: int) -> list[subprocess.Popen]:
    """The node and the player, each logging to <out>/<name>.log."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
    return [subprocess.Popen([package_executable(exe), "--ros-args", "--params-file", str(out / f"{cfg}.yaml")],
                             env=env, stdout=open(out / f"{cfg}.log", "w"), stderr=subprocess.STDOUT)
            for exe, cfg in (("depth_node", "node"), ("rig_player", "player"))]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


class _Recorder:
    """What the demo records: result messages (and their latency), fused clouds, diagnostics, camera frames."""

    def __init__(self, names: list[str], transport: str = "raw"):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import PointCloud2

        from da3_ros.msg import MultiViewDepth

        self.node = Node("da3_demo_recorder")
        self.sets: list = []
        self.fused: list = []
        self.diags: list = []
        self.latency_s: list[float] = []
        # the camera images (raw CDR, deserialised only for the picture): the set's own frames by stamp
        self.camera_frames: dict[str, dict[int, bytes]] = {n: {} for n in names}
        self.node.create_subscription(MultiViewDepth, "multiview_depth", self._on_set, 5)
        self.transport = input_transport(transport)  # what the player sends and the node takes
        for n in names:
            self.node.create_subscription(self.transport.msg_type, self.transport.topic(f"{n}/image_raw"),
                                          lambda d, n=n: self._on_image(n, d), qos_profile_sensor_data, raw=True)
        self.node.create_subscription(PointCloud2, "points_fused", self.fused.append, 5)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, 5)

    def _on_set(self, m) -> None:
        self.sets.append(m)
        self.latency_s.append((self.node.get_clock().now().nanoseconds - conv.stamp_to_ns(m.header.stamp)) / 1e9)

    def _on_image(self, name: str, data: bytes) -> None:
        frames = self.camera_frames[name]
        frames[conv.stamp_ns_from_cdr(data)] = data
        while len(frames) > 50:
            del frames[min(frames)]

    def record(self, seconds: float, procs: list[subprocess.Popen], out: Path) -> float:
        """Spin until ``seconds`` after the first set and a set that can be pictured; return the first set's time.

        Picturable: the recorder also received all of the set's camera frames. Camera topics are best effort,
        and under load it can miss some, so recording goes on (up to the start-up deadline) until one such set
        came, rather than writing pictures without the camera images. Returns monotonic seconds.
        """
        import rclpy

        first = float("nan")
        end = None
        deadline = time.monotonic() + seconds + 120
        while time.monotonic() < deadline and not (end is not None and time.monotonic() >= end and self.picturable()):
            rclpy.spin_once(self.node, timeout_sec=0.1)
            if self.sets and end is None:
                first = time.monotonic()
                end = first + seconds
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a process exited early; see {out}/node.log and {out}/player.log")
        rclpy.spin_once(self.node, timeout_sec=1.5)
        return first

    def picturable(self) -> bool:
        """Whether some set's camera frames were all received (the picture shows them beside its depth)."""
        return any(None not in _set_frames(m, self.camera_frames) for m in self.sets)


def _camera_images(m, camera_frames: dict[str, dict[int, bytes]],
                   transport: InputTransport = RAW) -> list[np.ndarray | None]:
    """Each view's camera image as the network saw it (resized like the node does); None if not received."""
    from da3_ros.core import preprocess

    msgs = _set_frames(m, camera_frames)
    if any(d is None for d in msgs):
        return [None] * len(m.views)
    rgbs = [conv.image_to_rgb(transport.decode(d)) for d in msgs]
    plans = preprocess.plan_batch([r.shape[:2] for r in rgbs], 504)  # the demo node's process_res
    return [preprocess.resize_image(r, p) if p.proc_hw == (v.depth.height, v.depth.width) else None
            for r, p, v in zip(rgbs, plans, m.views)]


def _picture_set(sets: list, camera_frames: dict[str, dict[int, bytes]]):
    """The newest set whose camera frames the recorder also received; the last set if none qualifies.

    Camera topics are best effort: under load the recorder can miss the very frames of the last set.
    """
    return next((m for m in reversed(sets) if None not in _set_frames(m, camera_frames)), sets[-1])


def _set_frames(m, camera_frames: dict[str, dict[int, bytes]]) -> list[bytes | None]:
    """Each view's recorded camera message (raw CDR) by the view's stamp; None where it was not received."""
    return [camera_frames.get(v.camera_name, {}).get(conv.stamp_to_ns(v.depth.header.stamp)) for v in m.views]


def _write_pictures(m, fused, out: Path, camera_frames: dict[str, dict[int, bytes]] | None = None,
                    transport: InputTransport = RAW) -> None:
    units = "m" if m.is_metric else "relative"
    images = _camera_images(m, camera_frames or {}, transport)
    for v, rgb in zip(m.views, images):
        depth = conv.image_to_array(v.depth)
        tiles = [] if rgb is None else [np.ascontiguousarray(rgb[:, :, ::-1])]
        tiles.append(colorize(depth, invert=True))
        if v.confidence.data:
            tiles.append(colorize(conv.image_to_array(v.confidence)))
        what = ("image | " if rgb is not None else "") + f"depth ({units}) | confidence"
        cv2.imwrite(str(out / f"{v.camera_name}_depth_confidence.png"),
                    caption(np.hstack(tiles), f"{m.model} | {v.camera_name} | {what}"))
    stamp = conv.stamp_to_ns(m.header.stamp)
    same_set = [c for c in fused if conv.stamp_to_ns(c.header.stamp) == stamp]
    cloud = same_set[-1] if same_set else (fused[-1] if fused else None)
    if cloud is not None:
        xyz, rgb = conv.pointcloud2_to_xyz_rgb(cloud)
        cv2.imwrite(str(out / "fused_cloud.png"),
                    caption(render_cloud(xyz, rgb), f"fused cloud, {len(xyz)} points, frame {cloud.header.frame_id}"
                            f" | {m.model}"))


def _print_summary(sets, latency_s, d: dict, out: Path, startup_s: float) -> None:
    n_views = len(sets[-1].views)
    rate = float(d.get("output_rate_hz", 0))
    rows = [
        ("backend (torch loaded in the node)", f"{d.get('backend')} ({d.get('torch_loaded')})"),
        ("start-up: launch to first set (s)", f"{startup_s:.1f}"),
        ("sets processed", d.get("sets_done")), ("views per set (ONE forward)", n_views),
        ("sets/s", f"{rate:.2f}"), ("views/s", f"{rate * n_views:.2f}"),
        ("latency stamp->publish p50 / max (s)", f"{np.median(latency_s):.2f} / {np.max(latency_s):.2f}"),
        ("input frames/s (all cameras)", d.get("input_rate_hz")),
        ("sets superseded (dropped, newest kept)", d.get("sets_superseded")),
        ("frames dropped by sync", d.get("frames_dropped")), ("bad input / errors", f"{d.get('bad_input')} / "
                                                                                   f"{d.get('errors')}"),
        ("node peak memory (MB)", d.get("peak_rss_mb")),
    ]
    rows += [(f"stage {s} p50 (ms)", d.get(f"{s}_ms.p50")) for s in
             ("sync_wait", "convert", "preprocess", "forward", "postprocess", "publish")]
    print("\n[demo] summary (node /diagnostics + recorder)")
    for k, v in rows:
        print(f"  {k:<42} {v}")
    print(f"[demo] pictures: {', '.join(sorted(p.name for p in out.glob('*.png')))} in {out}")
