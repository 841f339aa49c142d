"""Video camera input: ffmpeg_image_transport's FFMPEGPacket and foxglove's CompressedVideo, decoded with PyAV.

Unlike a raw or JPEG frame, a video packet needs the packets before it: each camera has one ``StreamDecoder``,
fed every packet on arrival (the subscription callback) in order; it gives the decoded frame as an rgb8
``sensor_msgs/Image`` stamped with its packet's header (that Image is what the synchroniser holds), or the
reason the packet was dropped (``core.video_stream.VideoDrop``: before the first keyframe, after a lost packet
until the next keyframe, a decode error, an unsupported codec). The drop rule is the ROS-free
``core.video_stream.VideoGate``. PyAV (FFmpeg) is imported when the first decoder is made.
"""
from __future__ import annotations

from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from da3_ros.core.video_stream import VideoDrop, VideoGate, VideoPacket, codec_of, is_keyframe
from da3_ros.ros import conversions as conv

AV_PKT_FLAG_KEY = 1  # FFmpeg's keyframe flag, FFMPEGPacket.flags


def _ffmpeg_packet(msg) -> tuple[Header, VideoPacket, bytes]:
    """FFMPEGPacket -> (header, packet facts, payload): keyframe from ``flags``, sequence from ``pts``."""
    codec = codec_of(msg.encoding)
    return msg.header, VideoPacket(codec, int(msg.width), int(msg.height), bool(msg.flags & AV_PKT_FLAG_KEY),
                                   int(msg.pts)), bytes(msg.data)


def _foxglove_packet(msg) -> tuple[Header, VideoPacket, bytes]:
    """CompressedVideo -> (header, packet facts, payload): keyframe read from the Annex B NAL units, no sequence."""
    codec = codec_of(msg.format)
    data = bytes(msg.data)
    return (Header(stamp=msg.timestamp, frame_id=msg.frame_id),
            VideoPacket(codec, 0, 0, is_keyframe(codec, data)), data)


class StreamDecoder:
    """One camera's video decoder: serialised packets in arrival order -> rgb8 Image, None or a ``VideoDrop``."""

    def __init__(self, msg_type: type, threads: int = 1):
        self.msg_type = msg_type
        self._facts = _ffmpeg_packet if msg_type.__name__ == "FFMPEGPacket" else _foxglove_packet
        self.gate = VideoGate()
        self.threads = threads  # FFmpeg decoder threads (1: a frame out per packet in, no frame-thread delay)
        self._ctx = None
        self._stamps: dict[int, Header] = {}  # our packet counter -> its header, until its frame comes out
        self._n = 0

    def feed(self, data: bytes) -> Image | VideoDrop | None:
        """Decode one serialised packet; the frame it completes (None: the decoder holds it back) or the drop.

        ConversionError (bad_input) when the bytes are not a ``msg_type``.
        """
        try:
            msg = deserialize_message(data, self.msg_type)
        except Exception as exc:  # rclpy raises a bare RuntimeError/TypeError on malformed CDR
            raise conv.ConversionError(f"cannot deserialise a {self.msg_type.__name__} ({len(data)} bytes): "
                                       f"{exc}") from None
        try:
            header, facts, payload = self._facts(msg)
        except ValueError:
            return VideoDrop.UNSUPPORTED
        if not payload:
            return VideoDrop.UNSUPPORTED
        restart, drop = self.gate.admit(facts)
        if drop is not None:
            return drop
        if restart or self._ctx is None:
            self._open(facts.codec)
        return self._decode(header, payload)

    def keyframe(self, data: bytes) -> bool:
        """True if a serialised packet is a keyframe (read as ``feed`` reads it, nothing decoded); False if bad."""
        try:
            return self._facts(deserialize_message(data, self.msg_type))[1].keyframe
        except Exception:  # malformed CDR or an unsupported codec: no keyframe to decode from
            return False

    def _open(self, codec: str) -> None:
        import av  # PyAV: FFmpeg's decoders, bundled in its wheel

        self._ctx = av.CodecContext.create(codec, "r")
        self._ctx.thread_count = self.threads
        self._stamps.clear()

    def _decode(self, header: Header, payload: bytes) -> Image | VideoDrop | None:
        import av

        packet = av.Packet(payload)
        packet.pts = self._n
        self._stamps[self._n] = header
        self._n += 1
        try:
            frames = self._ctx.decode(packet)
        except (av.FFmpegError, ValueError):
            self.gate.decode_failed()
            self._stamps.clear()
            return VideoDrop.DECODE_ERROR
        if not frames:
            return None
        frame = frames[-1]
        stamped = self._stamps.pop(frame.pts, header)
        self._stamps = {k: v for k, v in self._stamps.items() if k > frame.pts}
        return conv.rgb_to_image(frame.to_ndarray(format="rgb24"), stamped)
