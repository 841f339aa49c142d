"""The example photos and video as a recorded 3-camera rig: a ROS 2 bag (MCAP) to try ``da3-ros bag`` on.

``python -m da3_ros.offline.example_bag OUT.mcap --examples DIR [--sets N]`` writes cameras ``left`` and ``front``
as raw images (rgb8, bgr8) and ``right`` as a JPEG ``CompressedImage`` (as image_transport records it), each
with camera_info, plus the rig's extrinsics on /tf_static, at 10 Hz. Messages are encoded by
mcap-ros2-support's own CDR writer from plain dicts (neither rclpy nor da3_ros's writer), so a test reading
this bag reads a third party's bytes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from mcap_ros2.writer import Writer as Ros2Writer

from da3_ros.core.image_io import bgr_to_rgb, read_rgb
from da3_ros.offline.mcap_io import message_definition
from da3_ros.ros.player import pinhole_K
from da3_ros.ros.transport import JPEG_FORMAT

CAMERAS = ["left", "right", "front"]
# T_rig_<camera optical frame>: translations in metres, identity rotations
T_RIG = {"left": [0.0, -0.1, 0.0], "right": [0.25, -0.1, 0.0], "front": [0.1, 0.0, 0.05]}
T0_NS = 1_700_000_000 * 10**9


def _header(stamp_ns: int, frame: str) -> dict:
    return {"stamp": {"sec": stamp_ns // 10**9, "nanosec": stamp_ns % 10**9}, "frame_id": frame}


def _scaled(rgb: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return rgb
    return cv2.resize(rgb, (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)


def _frames(examples: Path, n: int, scale: float):
    """Per tick, RGB frames of left (photo), right (photo) and front (the video, frame by frame)."""
    photos = {}
    for c, name in (("left", "SOH_000.png"), ("right", "SOH_010.png")):
        photos[c] = _scaled(read_rgb(examples / name), scale)
    cap = cv2.VideoCapture(str(examples / "robot_unitree.mp4"))
    if not cap.isOpened():
        raise FileNotFoundError(f"example video {examples / 'robot_unitree.mp4'} missing")
    try:
        for _ in range(n):
            ok, bgr = cap.read()
            if not ok:  # loop
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, bgr = cap.read()
            yield {**photos, "front": _scaled(bgr_to_rgb(bgr), scale)}
    finally:
        cap.release()


def _camera_info(stamp: int, c: str, h: int, w: int) -> dict:
    K = pinhole_K(w, h, 60.0)
    return {"header": _header(stamp, f"{c}_optical_frame"), "height": h, "width": w, "distortion_model": "plumb_bob",
            "d": [0.0] * 5, "k": K.ravel().tolist(), "r": np.eye(3).ravel().tolist(),
            "p": np.hstack([K, np.zeros((3, 1))]).ravel().tolist(), "binning_x": 0, "binning_y": 0,
            "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}}


def write_example_bag(path: str | Path, examples: str | Path, n_sets: int = 20, scale: float = 1.0,
                      rate_hz: float = 10.0, front_offset_ns: int = 0,
                      bad_encoding_at: int | None = None) -> list[dict[str, tuple[int, np.ndarray]]]:
    """Write the rig bag; returns per tick {camera: (stamp_ns, RGB as a subscriber decodes it)}.

    ``front_offset_ns`` shifts the video camera's stamps (for approximate sync); ``bad_encoding_at``: at that
    tick, left's image claims ``bayer_rggb8`` (an image the node drops).
    """
    period_ns = int(round(1e9 / rate_hz))
    ticks = []
    with open(path, "wb") as f:
        w = Ros2Writer(f)
        schemas = {t: w.register_msgdef(t, message_definition(t)) for t in (
            "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
            "tf2_msgs/msg/TFMessage")}
        tf = {"transforms": [{"header": _header(0, "rig"), "child_frame_id": f"{c}_optical_frame",
                              "transform": {"translation": dict(zip("xyz", T_RIG[c])),
                                            "rotation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}}}
                             for c in CAMERAS]}
        w.write_message("/tf_static", schemas["tf2_msgs/msg/TFMessage"], tf, log_time=T0_NS - 10**6)
        for k, frames in enumerate(_frames(Path(examples), n_sets, scale)):
            tick = {}
            for c in CAMERAS:
                stamp = T0_NS + k * period_ns + (front_offset_ns if c == "front" else 0)
                rgb = frames[c]
                h, wd = rgb.shape[:2]
                w.write_message(f"/{c}/camera_info", schemas["sensor_msgs/msg/CameraInfo"],
                                _camera_info(stamp, c, h, wd), log_time=stamp + 10**6)
                header = _header(stamp, f"{c}_optical_frame")
                if c == "right":
                    ok, jpg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
                    assert ok
                    w.write_message(f"/{c}/image_raw/compressed", schemas["sensor_msgs/msg/CompressedImage"],
                                    {"header": header, "format": JPEG_FORMAT, "data": jpg.tobytes()},
                                    log_time=stamp + 2 * 10**6)
                    rgb = np.ascontiguousarray(cv2.imdecode(jpg, cv2.IMREAD_COLOR)[:, :, ::-1])
                else:
                    encoding = "bgr8" if c == "front" else "rgb8"
                    if k == bad_encoding_at and c == "left":
                        encoding = "bayer_rggb8"
                    pix = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
                    w.write_message(f"/{c}/image_raw", schemas["sensor_msgs/msg/Image"],
                                    {"header": header, "height": h, "width": wd, "encoding": encoding,
                                     "is_bigendian": 0, "step": wd * 3, "data": np.ascontiguousarray(pix).tobytes()},
                                    log_time=stamp + 2 * 10**6)
                tick[c] = (stamp, rgb)
            ticks.append(tick)
        w.finish()
    return ticks


def main(argv: list[str] | None = None) -> int:
    """``python -m da3_ros.offline.example_bag OUT.mcap --examples DIR``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the .mcap to write")
    p.add_argument("--examples", required=True, help="folder with SOH_000.png, SOH_010.png, robot_unitree.mp4")
    p.add_argument("--sets", type=int, default=20, help="ticks (one frame per camera each)")
    p.add_argument("--rate-hz", type=float, default=10.0)
    p.add_argument("--scale", type=float, default=1.0, help="resize every frame by this factor")
    args = p.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_example_bag(args.out, args.examples, args.sets, args.scale, args.rate_hz)
    print(f"wrote {args.out}: cameras {CAMERAS} ({args.sets} frames each at {args.rate_hz} Hz, right as JPEG), "
          "camera_info, /tf_static")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
