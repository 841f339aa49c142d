"""What one processed set emits, decided in ONE place for the node, the lifecycle node and ``da3-ros bag``.

``set_messages`` and ``nav_messages`` turn a set's ``SetResult`` (core.results) into (topic, message) pairs
for the outputs a caller wants, and into ``Withheld`` notes for those a rule keeps back (no metres for
navigation, the reference camera silent, a ``fused_frame`` that names no camera frame). The node publishes
the pairs, the bag writes them; both count the notes the same way (once per set and reason). Knows message
types, never rclpy.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from da3_ros.core.results import SetResult
from da3_ros.ros.messages import SetMessages

PER_CAMERA_OUTPUTS = {  # output -> (topic under <camera>/, type)
    "depth": ("depth/image", Image), "depth_mm": ("depth/image_mm", Image),
    "depth_compressed": ("depth/image/compressedDepth", CompressedImage),  # image_transport's compressedDepth
    "depth_mm_compressed": ("depth/image_mm/compressedDepth", CompressedImage),
    "camera_info": ("depth/camera_info", CameraInfo), "confidence": ("confidence/image", Image),
    "sky": ("sky/mask", Image), "points": ("points", PointCloud2),
}
FUSED, MULTIVIEW, TF, OBSTACLES, SCAN = "points_fused", "multiview_depth", "/tf", "points_obstacles", "scan"
ODOMETRY = "odometry"  # nav_msgs/Odometry of the temporal window (temporal.keyframes > 0)


@dataclass(frozen=True)
class Message:
    """One message of a set, on ``topic`` (relative to the node's namespace, as the node names it)."""

    topic: str
    msg: Any


@dataclass(frozen=True)
class Withheld:
    """An output a set does not emit: ``counter`` names the reason (a NodeStats counter), ``text`` the fix."""

    topic: str
    counter: str
    text: str


def per_camera_keys(publish_mm: bool, has_sky: bool) -> list[str]:
    """The per-camera outputs the node has: depth in mm only with ``depth.publish_mm``, sky only if predicted."""
    return [k for k in PER_CAMERA_OUTPUTS
            if (not k.startswith("depth_mm") or publish_mm) and (k != "sky" or has_sky)]


def camera_topic(camera: str, key: str) -> str:
    """``<camera>/depth/image`` and the like."""
    return f"{camera}/{PER_CAMERA_OUTPUTS[key][0]}"


def set_messages(out: SetResult, keys: list[str], wanted: Callable[[str], bool]) -> Iterator[Message | Withheld]:
    """Per-camera outputs, the fused cloud, the set message, odometry and TF of ``out`` whose topic is ``wanted``."""
    msgs = SetMessages(out)
    for j, camera in enumerate(out.camera_names):
        for key in keys:
            topic = camera_topic(camera, key)
            if wanted(topic):
                msg = getattr(msgs, key)(j)
                if msg is not None:
                    yield Message(topic, msg)
    if wanted(FUSED):
        yield from _fused(out, msgs)
    if wanted(MULTIVIEW):
        yield Message(MULTIVIEW, msgs.multiview())
    if wanted(ODOMETRY):
        odom_withheld = out.odometry_withheld()
        if odom_withheld is not None:
            yield Withheld(ODOMETRY, *odom_withheld)
        elif (odom := msgs.odometry()) is not None:
            yield Message(ODOMETRY, odom)
    if wanted(TF):
        for withheld in (out.tf_withheld(), out.odometry_tf_withheld()):
            if withheld is not None:
                yield Withheld(TF, *withheld)
        tf = msgs.tf()
        if tf is not None:
            yield Message(TF, tf)


def _fused(out: SetResult, msgs: SetMessages) -> Iterator[Message | Withheld]:
    withheld = out.fused_withheld()
    if withheld is not None:
        yield Withheld(FUSED, *withheld)
        return
    try:
        fused = msgs.fused()
    except ValueError as exc:  # fused_frame names no camera frame of this rig: the other outputs go on
        yield Withheld(FUSED, "errors", f"points_fused: {exc}")
        return
    if fused is not None:
        yield Message(FUSED, fused)


def nav_messages(out: SetResult, wanted: Callable[[str], bool]) -> Iterator[Message | Withheld]:
    """``points_obstacles`` and ``scan`` when wanted: only from metric sets, with their TF links and K."""
    topics = [t for t in (OBSTACLES, SCAN) if wanted(t)]
    if not topics:
        return
    withheld = out.nav_withheld()
    if withheld is not None:
        for topic in topics:
            yield Withheld(topic, *withheld)
        return
    msgs = SetMessages(out)
    for topic in topics:
        try:
            yield Message(topic, msgs.obstacles() if topic == OBSTACLES else msgs.scan())
        except ValueError as exc:  # a missing TF link, no intrinsics, no ground plane: said, counted
            yield Withheld(topic, "nav_unavailable", f"{topic}: {exc}")


def reasons(notes: list[Withheld]) -> dict[str, str]:
    """Each reason of a set once (counter -> text): a set counts once per reason, whatever it withheld."""
    out: dict[str, str] = {}
    for note in notes:
        out.setdefault(note.counter, note.text)
    return out
