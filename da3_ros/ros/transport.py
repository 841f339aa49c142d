"""Camera input transports, image_transport's names: ``raw`` (sensor_msgs/Image) and ``compressed``.

``compressed`` is image_transport's: ``sensor_msgs/CompressedImage`` (JPEG or PNG) on ``<image_topic>/compressed``.
``ffmpeg`` (ffmpeg_image_transport_msgs/FFMPEGPacket on ``<image_topic>/ffmpeg``) and ``foxglove``
(foxglove_msgs/CompressedVideo on ``<image_topic>/foxglove``) are H.264 / H.265 video: every packet is decoded
on arrival by the camera's ``stream()`` decoder (da3_ros.ros.video), and the synchroniser holds decoded Images.
Frames arrive as serialised CDR bytes either way: the stamp is read from them without deserialising (both
messages start with a std_msgs/Header), and only the frames of a set that is processed are deserialised and,
when compressed, decoded (da3_ros.ros.conversions.compressed_to_image).
"""
from __future__ import annotations

from dataclasses import dataclass

from ffmpeg_image_transport_msgs.msg import FFMPEGPacket
from foxglove_msgs.msg import CompressedVideo
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from da3_ros.ros import conversions as conv

@dataclass(frozen=True)
class InputTransport:
    """One transport: which message type on which topic, and how its serialised frames become an Image."""

    name: str
    msg_type: type
    topic_suffix: str  # appended to cameras.<name>.image_topic
    video: bool = False  # packets decoded in order on arrival (``stream``), not per processed set

    def topic(self, image_topic: str) -> str:
        """The topic this transport subscribes for a camera's base image topic."""
        return image_topic.rstrip("/") + self.topic_suffix

    def decode(self, data: bytes) -> Image:
        """Serialised CDR bytes of ``msg_type`` -> sensor_msgs/Image; ConversionError (with the reason) if bad."""
        try:
            msg = deserialize_message(data, self.msg_type)
        except Exception as exc:  # rclpy raises a bare RuntimeError/TypeError on malformed CDR
            raise conv.ConversionError(f"cannot deserialise a {self.msg_type.__name__} ({len(data)} bytes): "
                                       f"{exc}") from None
        return msg if self.msg_type is Image else conv.compressed_to_image(msg)

    def stream(self):
        """A camera's decoder of this video transport (da3_ros.ros.video.StreamDecoder)."""
        from da3_ros.ros.video import StreamDecoder

        return StreamDecoder(self.msg_type)


class VideoTransport(InputTransport):
    """A video transport: the synchroniser already holds decoded Images (``StreamDecoder.feed``)."""

    def decode(self, data) -> Image:
        """The Image its stream decoder made on arrival, as it is."""
        return data


JPEG_FORMAT = "rgb8; jpeg compressed bgr8"  # image_transport's format string of a JPEG from an rgb8 camera
RAW = InputTransport("raw", Image, "")
COMPRESSED = InputTransport("compressed", CompressedImage, "/compressed")
FFMPEG = VideoTransport("ffmpeg", FFMPEGPacket, "/ffmpeg", video=True)  # ffmpeg_image_transport's name
FOXGLOVE = VideoTransport("foxglove", CompressedVideo, "/foxglove", video=True)  # foxglove_compressed_video_..
_BY_NAME = {t.name: t for t in (RAW, COMPRESSED, FFMPEG, FOXGLOVE)}
TRANSPORTS = tuple(_BY_NAME)  # = the choices of cameras.<name>.transport (da3_ros.core.params; a test checks)


def input_transport(name: str) -> InputTransport:
    """The transport called ``name`` (cameras.<name>.transport); ValueError naming the choices otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"transport = {name!r} is not allowed: one of {', '.join(TRANSPORTS)}") from None

