"""``da3-ros bag``'s video cameras (ffmpeg_image_transport's FFMPEGPacket, foxglove's CompressedVideo).

A video packet needs the packets before it, so a video camera of the bag has one decoder, the node's own
(``da3_ros.ros.video.StreamDecoder`` with its drop rule ``core.video_stream.VideoGate``), fed EVERY packet of
its topic in bag order, whatever the synchroniser and ``--every-n`` later keep; the decoded Image, stamped
with its packet's header, is what the synchroniser holds (as in the node).

``--start``: the packets before the window are not decoded, but those from the last keyframe before it are
held (at most one GOP) and decoded, unused, just before the window's first packet, so the window's first
frame decodes as if the bag had been decoded from its beginning: no ``before_keyframe`` drops for a window
that starts mid-GOP, at the cost of decoding at most one GOP more. A loss inside that held GOP still drops
the window's frames up to the next keyframe (counted, as the node would).
"""
from __future__ import annotations

from sensor_msgs.msg import Image

from da3_ros.core.video_stream import VideoDrop
from da3_ros.ros import conversions as conv
from da3_ros.ros.transport import InputTransport


MAX_HELD_PACKETS = 600  # 20 s at 30 Hz: a stream without keyframes for longer is not held (memory stays bounded)


class BagVideo:
    """One video camera of a bag: its stream decoder and the packets held before ``--start``."""

    def __init__(self, transport: InputTransport, max_held: int = MAX_HELD_PACKETS):
        self.decoder = transport.stream()
        self.max_held = max_held
        self._held: list[bytes] = []  # the packets before the window from its last keyframe on

    def hold(self, data: bytes) -> None:
        """A packet before ``--start``: kept if it is a keyframe or follows a kept one (a new keyframe resets).

        A keyframe interval longer than ``max_held`` packets (an intra-refresh stream with no keyframe, a
        recording hours long) is let go: the window then starts at its next keyframe, its frames before it
        counted ``before_keyframe`` as in the node.
        """
        if self.decoder.keyframe(data):
            self._held = [data]
        elif self._held:
            self._held.append(data)
            if len(self._held) > self.max_held:
                self._held = []

    def feed(self, data: bytes) -> Image | VideoDrop | None:
        """A packet in the window: the frame it completes, None (held back by the decoder) or the drop reason.

        The held packets before the window are decoded first (their frames and drops are not the window's).
        ConversionError (bad_input) when ``data`` is not a message of the transport's type.
        """
        held, self._held = self._held, []
        for packet in held:
            try:
                self.decoder.feed(packet)
            except conv.ConversionError:
                pass  # not counted: outside the window (the gate sees the gap at the next packet)
        return self.decoder.feed(data)
