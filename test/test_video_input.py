"""Video camera input (cameras.<name>.transport: ffmpeg / foxglove): H.264 and H.265 packets from the example video.

Packets are made by PyAV's libx264 / libx265 from frames of ``robot_unitree.mp4``; the reference frames are the
same packets decoded independently here with PyAV. The drop rule is checked on its own (core.video_stream), the
decoder on real packets in process (both transports, both codecs), and once over real Fast DDS with the node:
depth = the core's on the decoded frames, and a stream cut mid-GOP recovers at the next keyframe with the drops
counted exactly.
"""
from __future__ import annotations

import json
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from ffmpeg_image_transport_msgs.msg import FFMPEGPacket
from foxglove_msgs.msg import CompressedVideo
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from conftest import EXAMPLES
from da3_ros.core.processor import Processed
from da3_ros.core.video_stream import VideoDrop, VideoGate, VideoPacket, codec_of, is_keyframe
from da3_ros.offline.setup import OfflineSetup
from da3_ros.ros import conversions as conv
from da3_ros.ros.transport import FFMPEG, input_transport
from ros_harness import diag_values, process, write_params

W, H, GOP = 112, 64, 4  # small frames, short GOPs: keyframes at 0, 4, 8, ...
ENCODERS = {"h264": "libx264", "hevc": "libx265"}


def example_frames(n: int, w: int = W, h: int = H) -> list[np.ndarray]:
    """The first ``n`` frames of the example video, resized to w x h (rgb24)."""
    with av.open(str(EXAMPLES / "robot_unitree.mp4")) as src:
        out = []
        for f in src.decode(video=0):
            out.append(f.reformat(width=w, height=h, format="rgb24").to_ndarray())
            if len(out) == n:
                return out
    raise AssertionError(f"the example video has fewer than {n} frames")


def encode(frames: list[np.ndarray], codec: str, gop: int = GOP) -> list[tuple[int, bool, bytes]]:
    """(pts, keyframe, Annex B payload) per frame: no B-frames, a keyframe every ``gop`` frames."""
    ctx = av.CodecContext.create(ENCODERS[codec], "w")
    ctx.width, ctx.height, ctx.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    ctx.time_base, ctx.framerate, ctx.gop_size, ctx.max_b_frames = Fraction(1, 30), Fraction(30), gop, 0
    ctx.options = ({"tune": "zerolatency"} if codec == "h264" else
                   {"tune": "zerolatency", "x265-params": f"log-level=error:bframes=0:keyint={gop}:scenecut=0"})
    packets = []
    for n, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = n
        packets += [(p.pts, p.is_keyframe, bytes(p)) for p in ctx.encode(frame)]
    packets += [(p.pts, p.is_keyframe, bytes(p)) for p in ctx.encode(None)]
    assert [p[0] for p in packets] == list(range(len(frames)))
    return packets


def reference_decode(codec: str, payloads: list[bytes]) -> list[np.ndarray]:
    """The frames the packets decode to, decoded here independently of da3_ros (rgb24)."""
    ctx = av.CodecContext.create(codec, "r")
    return [f.to_ndarray(format="rgb24") for data in payloads for f in ctx.decode(av.Packet(data))]


def stamp(k: int) -> Time:
    return conv.ns_to_stamp(1_700_000_000_000_000_000 + k * 33_333_333)


def ffmpeg_msg(k: int, codec: str, packet: tuple[int, bool, bytes]) -> FFMPEGPacket:
    pts, key, data = packet
    return FFMPEGPacket(header=Header(stamp=stamp(k), frame_id="cam_optical_frame"), width=W, height=H,
                        encoding=codec, pts=pts, flags=int(key), data=data)


def foxglove_msg(k: int, codec: str, packet: tuple[int, bool, bytes]) -> CompressedVideo:
    return CompressedVideo(timestamp=stamp(k), frame_id="cam_optical_frame", data=packet[2],
                           format="h265" if codec == "hevc" else "h264")


# --- the drop rule, without a decoder -----------------------------------------------------------------------
def test_the_gate_drops_before_the_first_keyframe_after_a_gap_and_restarts_on_a_new_size():
    gate = VideoGate()
    p = lambda seq, key, w=W: VideoPacket("h264", w, H, key, seq)  # noqa: E731
    assert gate.admit(p(7, False)) == (False, VideoDrop.BEFORE_KEYFRAME)  # joined mid-GOP
    assert gate.admit(p(8, True)) == (True, None)  # the first keyframe opens the decoder
    assert gate.admit(p(9, False)) == (False, None)
    assert gate.admit(p(11, False)) == (False, VideoDrop.AFTER_GAP)  # 10 was lost
    assert gate.admit(p(12, False)) == (False, VideoDrop.AFTER_GAP)  # still no keyframe
    assert gate.admit(p(13, True)) == (False, None)  # the keyframe recovers, same stream: no restart
    gate.decode_failed()
    assert gate.admit(p(14, False)) == (False, VideoDrop.AFTER_GAP)
    assert gate.admit(p(15, False, w=2 * W)) == (False, VideoDrop.BEFORE_KEYFRAME)  # a new size: its keyframe
    assert gate.admit(p(16, True, w=2 * W)) == (True, None) and gate.restarts == 1
    assert gate.admit(VideoPacket("hevc", 2 * W, H, True, 17)) == (True, None) and gate.restarts == 2


def test_codec_names_and_keyframes_are_read_from_real_packets():
    assert [codec_of(s) for s in ("h264", "libx264", "h264_nvenc", "hevc;yuv420p;bgr8;bgr8", "h265",
                                  "hevc_nvenc")] == ["h264"] * 3 + ["hevc"] * 3
    with pytest.raises(ValueError, match="'vp9'.*H.264 or H.265"):
        codec_of("vp9")
    frames = example_frames(6)
    for codec in ENCODERS:
        packets = encode(frames, codec)
        assert [is_keyframe(codec, data) for _, _, data in packets] == [key for _, key, _ in packets]
        assert [key for _, key, _ in packets] == [True, False, False, False, True, False]


# --- the decoder on real packets, both transports and codecs -----------------------------------------------
@pytest.mark.parametrize("transport", ["ffmpeg", "foxglove"])
@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_a_stream_cut_mid_gop_recovers_at_the_next_keyframe(transport, codec):
    """Frames = the independent decode of the same packets; joined mid-GOP and a lost packet: exact drops."""
    packets = encode(example_frames(14), codec)
    make = ffmpeg_msg if transport == "ffmpeg" else foxglove_msg
    decoder = input_transport(transport).stream()
    lost = 5  # mid-GOP: 6 and 7 cannot decode; 8 is a keyframe
    sent = [k for k in range(2, 14) if k != lost]  # joined at 2: 2 and 3 come before any keyframe
    out = {k: decoder.feed(serialize_message(make(k, codec, packets[k]))) for k in sent}
    ref = reference_decode(codec, [packets[k][2] for k in range(4, 14) if k != lost] if transport == "foxglove"
                           else [packets[k][2] for k in range(4, 14)])
    drops = {k: v.value for k, v in out.items() if isinstance(v, VideoDrop)}
    if transport == "ffmpeg":  # the pts gap is seen: 6, 7 dropped until keyframe 8
        assert drops == {2: "before_keyframe", 3: "before_keyframe", 6: "after_gap", 7: "after_gap"}
        decoded = [4, 8, 9, 10, 11, 12, 13]
        expect = {4: ref[0], **{k: ref[k - 4] for k in decoded[1:]}}
    else:  # CompressedVideo has no sequence number: the loss is not seen; FFmpeg conceals 6, 7 (H.264) or
        # discards them (H.265: no frame out, no error), as the independent decoder of the same packets does
        assert drops == {2: "before_keyframe", 3: "before_keyframe"}
        decoded = [k for k in sent if isinstance(out[k], Image)]
        assert set(range(8, 14)) | {4} <= set(decoded) and len(decoded) == len(ref)
        expect = dict(zip(decoded, ref))
    for k in decoded:
        img = out[k]
        assert isinstance(img, Image) and img.header.stamp == stamp(k) and img.encoding == "rgb8"
        np.testing.assert_array_equal(conv.image_to_rgb(img), expect[k])
    assert not np.array_equal(expect[8], expect[9])  # the comparison sees the video move


def test_bad_and_unsupported_packets_are_reasons_not_failures():
    decoder = FFMPEG.stream()
    with pytest.raises(conv.ConversionError, match="FFMPEGPacket"):
        decoder.feed(b"\x00\x01\x00\x00garbage")
    vp9 = FFMPEGPacket(header=Header(stamp=stamp(0)), encoding="vp9", flags=1, data=b"\x00\x00\x01\x65")
    assert decoder.feed(serialize_message(vp9)) is VideoDrop.UNSUPPORTED
    junk = FFMPEGPacket(header=Header(stamp=stamp(1)), encoding="h264", flags=1, pts=1, width=W, height=H,
                        data=b"\x00\x00\x00\x01\x65" + bytes(range(200)))
    assert decoder.feed(serialize_message(junk)) in (VideoDrop.DECODE_ERROR, None)


# --- the messages are the official ones: same RIHS01 type hash ---------------------------------------------
# The fields as published (ros-misc-utilities/ffmpeg_image_transport_msgs msg/FFMPEGPacket.msg; foxglove/schemas
# ros_foxglove_msgs/ros2/CompressedVideo.msg). rosidl hashes fields, not comments: the upstream files with all
# their comments hash the same (checked by hand with this function).
OFFICIAL = {
    ("ffmpeg_image_transport_msgs", "FFMPEGPacket"): "std_msgs/Header header\nint32 width\nint32 height\n"
    "string encoding\nuint64 pts\nuint8  flags\nbool is_bigendian\nuint8[] data\n",
    ("foxglove_msgs", "CompressedVideo"): "builtin_interfaces/Time timestamp\nstring frame_id\nuint8[] data\n"
    "string format\n",
}
HASHES = {"FFMPEGPacket": "RIHS01_648d84e0d33cbf76daf54b094d8f06154b8a24800a19c14371754df799fbaf79",
          "CompressedVideo": "RIHS01_32039eafc3770e589c86c4dabff9c392ce9955ebffd43f5f60763011d43d8d1d"}


def rihs01(package: str, name: str, text: str, prefix: Path) -> str:
    """The RIHS01 type hash (rosidl's) of a .msg definition (its dependencies' descriptions from ``prefix``/share)."""
    from rosidl_adapter.msg import convert_msg_to_idl
    from rosidl_generator_type_description import generate_type_hash

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "src"
        (src / "msg").mkdir(parents=True)
        (src / "msg" / f"{name}.msg").write_text(text)
        idl = convert_msg_to_idl(src, package, Path("msg") / f"{name}.msg", src / "msg")
        args = {"package_name": package, "output_dir": str(Path(d) / "out"), "idl_tuples": [f"{src}:msg/{idl.name}"],
                "include_paths": [f"{p}:{prefix}/share/{p}" for p in ("std_msgs", "builtin_interfaces")]}
        (Path(d) / "args.json").write_text(json.dumps(args))
        return json.loads(generate_type_hash(str(Path(d) / "args.json"))[0].read_text())["type_hashes"][0][
            "hash_string"]


def test_the_local_interface_packages_hash_as_the_official_definitions():
    import ament_index_python

    for (package, name), text in OFFICIAL.items():
        prefix = Path(ament_index_python.get_package_prefix(package))
        built = json.loads((prefix / "share" / package / "msg" / f"{name}.json").read_text())["type_hashes"][0]
        assert built["hash_string"] == rihs01(package, name, text, prefix) == HASHES[name], (package, built)
    assert rihs01("foxglove_msgs", "CompressedVideo", OFFICIAL[("foxglove_msgs", "CompressedVideo")]
                  .replace("string format", "string encoding"), prefix) != HASHES["CompressedVideo"]


# --- over real Fast DDS: the node -----------------------------------------------------------------------------
NODE = {"model": "random:da3-small@0", "backend": "torch", "process_res": 112, "camera_names": ["cam"],
        "tf.mode": "off", "diagnostics_period_s": 0.2}


def test_the_node_decodes_an_h264_stream_and_recovers_after_a_lost_packet(tmp_path, domain_id, checker):
    """FFMPEGPacket over DDS: depth = the core's on the independently decoded frames; a loss costs up to a keyframe.

    A packet lost mid-GOP costs exactly the frames up to the next keyframe, counted by reason in /diagnostics.
    """
    frames = example_frames(16)
    packets = encode(frames, "h264")
    lost = 9
    ref = reference_decode("h264", [p[2] for p in packets])  # (what a loss-free decoder gives)
    depth = checker.collect(Image, "cam/depth/image")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    pub = checker.node.create_publisher(FFMPEGPacket, "cam/image_raw/ffmpeg", 20)
    setup = OfflineSetup({**NODE, "cameras.cam.transport": "ffmpeg"})
    params = {**NODE, "cameras": {"cam": {"transport": "ffmpeg"}}}
    with process("depth_node", write_params(tmp_path / "node.yaml", "da3_depth", params), domain_id,
                 tmp_path / "node.log") as proc:
        setup.load()
        checker.spin_until(lambda: pub.get_subscription_count() > 0, 90, "node subscribed to <image>/ffmpeg")
        checker.spin_for(0.5)  # the node's reader matched too
        for k in range(len(packets)):
            if k != lost:
                pub.publish(ffmpeg_msg(k, "h264", packets[k]))
            checker.spin_for(0.15)

        def dropped() -> dict:
            return diag_values(diags[-1]) if diags else {}
        checker.spin_until(lambda: dropped().get("video_dropped", 0) >= 2 and depth, 60, "drops counted, depth")
        checker.spin_for(0.5)
        assert proc.poll() is None
    values = dropped()
    assert values["video_dropped"] == 2 and values["video_dropped.after_gap"] == 2, values  # 10, 11; 12 is key
    assert values["frames_in.cam"] == len(packets) - 1
    by_stamp = {conv.stamp_to_ns(stamp(k)): k for k in range(len(packets))}
    got = {by_stamp[conv.stamp_to_ns(m.header.stamp)]: conv.image_to_array(m) for m in depth}
    assert got and not set(got) & {lost, 10, 11}, sorted(got)
    for k, d in got.items():
        done = setup.core.process([conv.rgb_to_image(ref[k], Header(frame_id="cam_optical_frame"))], [None], [False])
        assert isinstance(done, Processed)
        np.testing.assert_array_equal(d, done.outputs.depth_arrays[0])
    assert "Traceback" not in (tmp_path / "node.log").read_text()
