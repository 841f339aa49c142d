"""``da3-ros bag`` on video camera topics (FFMPEGPacket / CompressedVideo), no DDS.

The packets are encoded by PyAV from frames of ``robot_unitree.mp4`` (test_video_input's encoder: short GOPs,
no B-frames, 112x64) and written with the project's BagWriter beside camera_info. The reference is a raw-image
bag of the same packets decoded independently with PyAV: the video bag's depth must equal that bag's depth,
stamp for stamp, and a packet removed mid-GOP must cost exactly the frames up to the next keyframe, counted by
reason in the run's summary.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from da3_ros.offline.bag import BagOptions, run_bag
from da3_ros.offline.mcap_io import BagWriter
from da3_ros.offline.setup import OfflineSetup, ros_type_name
from da3_ros.ros import conversions as conv
from da3_ros.ros.player import pinhole_K
from test_bag import read_output, stamp_ns
from test_video_input import H, W, encode, example_frames, ffmpeg_msg, foxglove_msg, reference_decode, stamp

N, LOST = 10, 5  # GOP 4: keyframes 0, 4, 8; packet 5 lost -> 6 and 7 cannot decode
DECODED = [0, 1, 2, 3, 4, 8, 9]
VALUES = {"model": "random:da3-small@0", "backend": "torch", "process_res": 56, "camera_names": ["cam"]}
FRAME = "cam_optical_frame"


def write_bag(path: Path, messages: list[tuple[int, str, object]]) -> Path:
    """(frame index, topic, message) in order, logged at the frame's stamp, each beside its camera_info."""
    info = conv.make_camera_info(pinhole_K(W, H, 60.0), (H, W), Header(frame_id=FRAME))
    with BagWriter(path) as bag:
        for k, topic, msg in messages:
            t_ns = conv.stamp_to_ns(stamp(k))
            info.header.stamp = stamp(k)
            bag.write("/cam/camera_info", ros_type_name(CameraInfo), serialize_message(info), t_ns)
            bag.write(topic, ros_type_name(type(msg)), serialize_message(msg), t_ns)
    return path


def video_bag(path: Path, transport: str, codec: str, packets: list, frames) -> Path:
    """A bag of the packets of ``frames`` (indices) on /cam/image_raw/<transport>, with camera_info."""
    make = ffmpeg_msg if transport == "ffmpeg" else foxglove_msg
    return write_bag(path, [(k, f"/cam/image_raw/{transport}", make(k, codec, packets[k])) for k in frames])


def depth_by_frame(path: Path) -> dict[int, np.ndarray]:
    """The output bag's /cam/depth/image by frame index (its stamp)."""
    index = {conv.stamp_to_ns(stamp(k)): k for k in range(N)}
    return {index[stamp_ns(m.header)]: np.frombuffer(bytes(m.data), "<f4").reshape(m.height, m.width)
            for _, _, m in read_output(path)["/cam/depth/image"]}


@pytest.fixture(scope="module")
def streams(tmp_path_factory) -> dict:
    """The H.264 and H.265 packets of the first N frames, and the raw bag's depth on their independent decode."""
    d = tmp_path_factory.mktemp("video_bag")
    frames = example_frames(N)
    out = {codec: encode(frames, codec) for codec in ("h264", "hevc")}
    ref = reference_decode("h264", [p[2] for p in out["h264"]])  # what a loss-free decoder gives
    raw = write_bag(d / "raw.mcap", [(k, "/cam/image_raw", conv.rgb_to_image(ref[k], Header(stamp=stamp(k),
                                                                                             frame_id=FRAME)))
                                     for k in DECODED])
    summary = run_bag(raw, d / "raw_out.mcap", VALUES, BagOptions(progress=False))
    assert summary.sets_processed == len(DECODED) and not summary.video_dropped
    out["raw_depth"] = depth_by_frame(d / "raw_out.mcap")
    out["hevc_ref"] = reference_decode("hevc", [p[2] for p in out["hevc"]])
    return out


def test_an_ffmpeg_bag_gives_the_raw_bags_depth_and_counts_a_lost_packet(tmp_path, streams):
    """Every packet decoded in order; 6, 7 (after the lost 5) dropped as after_gap; depth = the raw bag's."""
    bag = video_bag(tmp_path / "video.mcap", "ffmpeg", "h264", streams["h264"], [k for k in range(N) if k != LOST])
    summary = run_bag(bag, tmp_path / "out.mcap", {**VALUES, "cameras.cam.transport": "ffmpeg"},
                      BagOptions(progress=False))
    assert dict(summary.video_dropped) == {"after_gap": 2}, summary.lines()
    assert "video_dropped.after_gap: 2 packets not decoded (cam)" in summary.lines()
    assert summary.frames_in["cam"] == N - 1 and summary.sets_processed == len(DECODED) and not summary.drops
    got = depth_by_frame(tmp_path / "out.mcap")
    assert sorted(got) == DECODED
    for k in DECODED:
        np.testing.assert_array_equal(got[k], streams["raw_depth"][k], err_msg=f"frame {k}")
    assert not np.array_equal(got[8], got[9])  # the comparison sees the video move


def test_a_window_starting_mid_gop_decodes_from_the_keyframe_before_it(tmp_path, streams):
    """--start between frames 2 and 3: 0-2 are decoded unused (held from keyframe 0), so 3 is the first set.

    The camera's transport is left ``raw``: the bag finds its ``<image_topic>/ffmpeg`` topic on its own.
    """
    bag = video_bag(tmp_path / "video.mcap", "ffmpeg", "h264", streams["h264"], [k for k in range(N) if k != LOST])
    summary = run_bag(bag, tmp_path / "out.mcap", VALUES, BagOptions(start_s=0.08, progress=False))
    assert summary.frames_outside_window == 3 and dict(summary.video_dropped) == {"after_gap": 2}
    got = depth_by_frame(tmp_path / "out.mcap")
    assert sorted(got) == [3, 4, 8, 9]
    for k in got:
        np.testing.assert_array_equal(got[k], streams["raw_depth"][k], err_msg=f"frame {k}")


def test_a_foxglove_h265_bag_decodes_every_frame_in_order(tmp_path, streams):
    """CompressedVideo (H.265, keyframes from the NAL units), --every-n 3: depth = the core's on the reference.

    The reference: the same packets decoded independently with PyAV.
    """
    bag = video_bag(tmp_path / "video.mcap", "foxglove", "hevc", streams["hevc"], range(N))
    out = tmp_path / "out.mcap"
    summary = run_bag(bag, out, {**VALUES, "cameras.cam.transport": "foxglove"},
                      BagOptions(every_n=3, progress=False))
    assert not summary.video_dropped and summary.sets_formed == N and summary.sets_processed == 4
    assert len(summary.stage_s["video decode"]) == N  # every packet decoded, whatever --every-n keeps
    got = depth_by_frame(out)
    assert sorted(got) == [0, 3, 6, 9]  # P-frames among them: decoded from their predecessors
    setup = OfflineSetup(VALUES)
    setup.load()
    info = conv.make_camera_info(pinhole_K(W, H, 60.0), (H, W), Header(frame_id=FRAME))
    for k in sorted(got):
        image = conv.rgb_to_image(streams["hevc_ref"][k], Header(stamp=stamp(k), frame_id=FRAME))
        done = setup.core.process([image], [info], [False])
        np.testing.assert_array_equal(got[k], done.outputs.depth_arrays[0], err_msg=f"frame {k}")


def test_the_packets_held_before_the_window_are_bounded(streams):
    """A keyframe interval longer than ``max_held`` is let go (memory bounded): the window then waits for a keyframe."""
    from da3_ros.core.video_stream import VideoDrop
    from da3_ros.offline.bag_video import BagVideo
    from da3_ros.ros.transport import input_transport

    packets = [serialize_message(ffmpeg_msg(k, "h264", streams["h264"][k])) for k in range(4)]  # keyframe 0
    results = {}
    for max_held in (3, 2):
        video = BagVideo(input_transport("ffmpeg"), max_held=max_held)
        for data in packets[:3]:  # before --start: the keyframe and two frames after it
            video.hold(data)
        results[max_held] = video.feed(packets[3])  # the window's first packet, mid-interval
    assert isinstance(results[3], Image) or results[3] is None  # held, so it decodes (or the decoder holds it)
    assert results[2] == VideoDrop.BEFORE_KEYFRAME  # 3 packets > 2: let go, counted as the node would
