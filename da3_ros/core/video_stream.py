"""Video stream input (H.264 / H.265) without a decoder: which packets may be decoded, and why the others drop.

A video packet depends on the ones before it, so every packet of a camera goes to its decoder in arrival order,
and a packet the decoder cannot use is a counted drop with its reason (``VideoDrop``): the packets before the
stream's first keyframe, those after a lost packet (a gap in the sequence numbers, or a decode error) until
the next keyframe, and those of a codec this package does not decode. A stream that changes size or codec
restarts the decoder at a keyframe. ``VideoGate`` holds that rule per camera; the decoding itself (PyAV) is
``da3_ros.ros.video``'s. No ROS types here.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

CODECS = ("h264", "hevc")  # FFmpeg's decoder names; "h265" and encoder names map onto them (codec_of)


class VideoDrop(str, Enum):
    """Why a video packet was not decoded (the /diagnostics value ``video_dropped.<reason>``)."""

    BEFORE_KEYFRAME = "before_keyframe"  # the stream (or a restart) has not shown a keyframe yet
    AFTER_GAP = "after_gap"  # a packet was lost (sequence gap or decode error): waiting for the next keyframe
    DECODE_ERROR = "decode_error"  # the decoder refused this packet (then AFTER_GAP until a keyframe)
    UNSUPPORTED = "unsupported"  # a codec other than H.264 / H.265, or an empty packet


@dataclass(frozen=True)
class VideoPacket:
    """What the gate needs of one packet: its codec, size (0 = unknown), keyframe flag and sequence number.

    ``seq``: the publisher's consecutive frame number (ffmpeg_image_transport's ``pts``), or None where the
    message has none (foxglove's CompressedVideo): then a loss shows only as a decode error.
    """

    codec: str
    width: int
    height: int
    keyframe: bool
    seq: int | None = None


def codec_of(name: str) -> str:
    """FFmpeg's decoder name for a stream's codec or encoder string; ValueError naming the value otherwise.

    ffmpeg_image_transport's ``encoding`` is ``<codec>[;<pixel formats>...]`` (or an encoder name such as
    ``libx264``, ``h264_nvenc``, ``hevc_nvenc``); foxglove's ``format`` is ``h264`` or ``h265``.
    """
    head = name.split(";", 1)[0].strip().lower()
    if "hevc" in head or "265" in head:
        return "hevc"
    if "264" in head:
        return "h264"
    raise ValueError(f"video codec {name!r} is not decoded here: H.264 or H.265 only (ffmpeg_image_transport "
                     "encoding / foxglove format h264, h265, hevc)")


def _nal_types(codec: str, data: bytes) -> Iterator[int]:
    """The NAL unit types of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    i = data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        header = data[i + 3]
        yield header & 0x1F if codec == "h264" else (header >> 1) & 0x3F
        i = data.find(b"\x00\x00\x01", i + 3)


def is_keyframe(codec: str, data: bytes) -> bool:
    """True if an Annex B packet holds a random-access picture (what foxglove's CompressedVideo calls a keyframe).

    H.264: an IDR slice (NAL type 5); H.265: an IRAP picture (NAL types 16-23: BLA, IDR, CRA).
    """
    keys = {5} if codec == "h264" else set(range(16, 24))
    return any(t in keys for t in _nal_types(codec, data))


class VideoGate:
    """One camera's stream state: whether the next packet may be decoded and whether the decoder restarts first."""

    def __init__(self) -> None:
        self.codec = ""
        self.size = (0, 0)
        self.waiting: VideoDrop | None = VideoDrop.BEFORE_KEYFRAME  # why packets drop until a keyframe
        self._last_seq: int | None = None
        self.restarts = 0  # decoder restarts for a new codec or size (the first start not counted)

    def admit(self, p: VideoPacket) -> tuple[bool, VideoDrop | None]:
        """(restart the decoder first, drop reason or None) for packet ``p``; call in arrival order."""
        gap = p.seq is not None and self._last_seq is not None and p.seq != self._last_seq + 1
        self._last_seq = p.seq
        changed = p.codec != self.codec or (p.width and (p.width, p.height) != self.size)
        if p.keyframe:
            restart = bool(changed)
            if restart and self.codec:
                self.restarts += 1
            self.codec = p.codec
            self.size = (p.width, p.height) if p.width else self.size
            self.waiting = None
            return restart, None
        if changed and self.codec:
            self.waiting = VideoDrop.BEFORE_KEYFRAME  # a new stream: nothing decodes until its keyframe
        elif gap and self.waiting is None:
            self.waiting = VideoDrop.AFTER_GAP
        return False, self.waiting

    def decode_failed(self) -> None:
        """The decoder refused an admitted packet: later packets drop until the next keyframe."""
        self.waiting = VideoDrop.AFTER_GAP
