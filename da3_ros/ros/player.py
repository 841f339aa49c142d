"""``rig_player``: publishes video files and photos as a synchronized multi-camera rig with camera_info.

For demos and tests without cameras: every tick publishes one frame per camera, all with the same stamp
(a hardware-triggered rig) unless ``jitter_s`` spreads them; videos loop. ``transport: compressed`` publishes
JPEG ``sensor_msgs/CompressedImage`` on ``<name>/image_raw/compressed`` instead (image_transport's naming, as
most drivers and every robot over Wi-Fi stream), each distinct frame encoded once.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from da3_ros.core.image_io import bgr_to_rgb, read_rgb
from da3_ros.ros import conversions as conv
from da3_ros.core.errors import ConfigError
from da3_ros.core.geometry import pinhole_K
from da3_ros.ros.ros_main import run
from da3_ros.ros.transport import COMPRESSED, JPEG_FORMAT, input_transport


class FrameSource:
    """Frames of one camera: ``video:<path>`` (looped) or ``image:<path>`` (repeated)."""

    def __init__(self, spec: str, base_dir: str = ""):
        kind, _, path = spec.partition(":")
        path = os.path.join(base_dir, path) if base_dir else path  # absolute paths stay as given
        self.spec, self.kind, self._cap, self._img = spec, kind, None, None
        if kind == "video":
            self._cap = cv2.VideoCapture(path)
            if not self._cap.isOpened():
                raise ConfigError(f"cannot open video {path!r}")
        elif kind == "image":
            try:
                self._img = read_rgb(path)
            except FileNotFoundError as exc:
                raise ConfigError(str(exc)) from None
        else:
            raise ConfigError(f"source must be video:<path> or image:<path>, got {spec!r}")

    def next_rgb(self) -> np.ndarray:
        if self._img is not None:
            return self._img
        ok, frame = self._cap.read()
        if not ok:  # loop
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        return bgr_to_rgb(frame)


# rig_player's parameters and defaults (examples_dir: the base of relative source paths)
PLAYER_PARAMS: dict[str, object] = {
    "camera_names": ["camera"], "sources": [""], "examples_dir": "", "rate_hz": 5.0, "hfov_deg": 60.0,
    "jitter_s": 0.0, "max_frames": 0, "encoding": "rgb8", "publish_camera_info": True, "qos": "sensor_data",
    "transport": "raw", "jpeg_quality": 90,
}


class SerializedFrames:
    """One camera's image message, serialized once per distinct frame; each tick only writes its stamp.

    A photo repeats the same array, so it is converted (and JPEG-encoded) once, not at every tick: building a
    2.4 MB Image in Python and converting it for rclpy took 17 % of a core at 20 frames/s, CPU the node
    on the same cores then lacked (the player is there to feed the node, not to compete with it).
    """

    def __init__(self, frame_id: str, encoding: str, jpeg_quality: int | None):
        self.frame_id, self.encoding, self.jpeg_quality = frame_id, encoding, jpeg_quality
        self._last: tuple[np.ndarray | None, bytes] = (None, b"")

    def message(self, rgb: np.ndarray) -> Image | CompressedImage:
        header = Header(frame_id=self.frame_id)
        if self.jpeg_quality is None:
            return conv.rgb_to_image(rgb, header, self.encoding)
        ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ConfigError(f"cannot encode a {rgb.shape} frame as JPEG")
        return CompressedImage(header=header, format=JPEG_FORMAT, data=buf.tobytes())

    def at(self, rgb: np.ndarray, stamp_ns: int) -> bytes:
        """The serialized message of ``rgb`` stamped ``stamp_ns``."""
        if self._last[0] is not rgb:
            self._last = (rgb, serialize_message(self.message(rgb)))
        return conv.stamp_cdr(self._last[1], stamp_ns)


class RigPlayer(Node):
    def __init__(self, **kwargs):
        super().__init__("rig_player", **kwargs)
        p = {name: self.declare_parameter(name, default).value for name, default in PLAYER_PARAMS.items()}
        names, sources, examples_dir = p["camera_names"], p["sources"], p["examples_dir"]
        self.rate_hz, self.hfov_deg, self.jitter_s = p["rate_hz"], p["hfov_deg"], p["jitter_s"]
        self.max_frames, self.encoding, self.publish_info = p["max_frames"], p["encoding"], p["publish_camera_info"]
        reliable = p["qos"] == "reliable"
        try:
            transport = input_transport(p["transport"])  # the node's own transports: the same topics and types
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        compressed = transport is COMPRESSED
        if len(names) != len(sources):
            raise ConfigError(f"camera_names {names} and sources {sources} differ in length")
        self.sources = [FrameSource(s, examples_dir) for s in sources]
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
        self.names = names
        self.frames = [SerializedFrames(f"{n}_optical_frame", self.encoding, p["jpeg_quality"] if compressed else None)
                       for n in names]
        self.pub_img = [self.create_publisher(transport.msg_type, transport.topic(f"{n}/image_raw"), qos)
                        for n in names]
        # a camera without calibration advertises no camera_info at all (as drivers do)
        self.pub_info = [self.create_publisher(CameraInfo, f"{n}/camera_info", qos) for n in names] \
            if self.publish_info else []
        self.sent = 0
        self._rng = np.random.default_rng(0)
        self.create_timer(1.0 / self.rate_hz, self._tick)

    def _tick(self) -> None:
        if self.max_frames and self.sent >= self.max_frames:
            return
        now_ns = self.get_clock().now().nanoseconds
        for i, (name, src) in enumerate(zip(self.names, self.sources)):
            jitter_ns = int(self._rng.uniform(-1, 1) * self.jitter_s * 1e9) if self.jitter_s else 0
            header = Header(stamp=conv.ns_to_stamp(now_ns + jitter_ns), frame_id=f"{name}_optical_frame")
            rgb = src.next_rgb()
            self.pub_img[i].publish(self.frames[i].at(rgb, now_ns + jitter_ns))
            if self.publish_info:
                h, w = rgb.shape[:2]
                self.pub_info[i].publish(conv.make_camera_info(pinhole_K(w, h, self.hfov_deg), (h, w), header))
        self.sent += 1


def main(args=None) -> int:
    return run(RigPlayer, args, "rig_player")
