"""Compressed camera input (cameras.<name>.transport: compressed) over real Fast DDS, real photo, real network.

The node subscribes image_transport's ``<image_topic>/compressed`` (sensor_msgs/CompressedImage); the depth it
publishes must be the core's (da3_ros.ros.pipeline, same parameters, same model) on the DECODED image, exactly:
for JPEG the decoded pixels, for PNG (lossless) the original pixels themselves.
"""
from __future__ import annotations

import cv2
import numpy as np
from std_msgs.msg import Header
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, Image

from conftest import EXAMPLES
from da3_ros.ros import conversions as conv
from da3_ros.offline.setup import OfflineSetup
from da3_ros.core.processor import Processed
from ros_harness import diag_values, process, write_params

NODE = {"model": "random:da3-small@0", "backend": "torch", "process_res": 252, "camera_names": ["cam"],
        "tf.mode": "off"}
TOPIC = "cam/image_raw/compressed"


def _photo_bgr() -> np.ndarray:
    """The real example photo, downscaled 4x (a quick forward on 2 busy cores)."""
    bgr = cv2.imread(str(EXAMPLES / "SOH_000.png"), cv2.IMREAD_COLOR)
    return cv2.resize(bgr, (302, 170), interpolation=cv2.INTER_AREA)


def _encode(bgr: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, bgr)
    assert ok
    return buf.tobytes()


def _start(tmp_path, domain_id):
    params = {**NODE, "cameras": {"cam": {"transport": "compressed"}}}
    return process("depth_node", write_params(tmp_path / "node.yaml", "da3_depth", params), domain_id,
                   tmp_path / "node.log")


def _core_depth(setup: OfflineSetup, image: Image) -> np.ndarray:
    """The node's core on one Image (no camera_info, as in the test): the depth it would publish."""
    done = setup.core.process([image], [None], [False])
    assert isinstance(done, Processed), done
    return done.outputs.depth_arrays[0]


def _sender(checker, pub, data: bytes, fmt: str, sent: set):
    def make() -> CompressedImage:
        stamp = conv.ns_to_stamp(checker.node.get_clock().now().nanoseconds)
        sent.add(conv.stamp_to_ns(stamp))
        return CompressedImage(header=Header(stamp=stamp, frame_id="cam_optical_frame"), format=fmt, data=data)
    return make


def _depth_of(depth: list, stamps: set) -> np.ndarray | None:
    d = next((m for m in depth if conv.stamp_to_ns(m.header.stamp) in stamps), None)
    return None if d is None else conv.image_to_array(d)


def test_jpeg_and_png_give_the_depth_of_the_decoded_image(tmp_path, domain_id, checker):
    """JPEG: depth = the core's on the decoded JPEG, exactly; PNG (lossless): = the core's on the original pixels."""
    bgr = _photo_bgr()
    jpeg, png = _encode(bgr, ".jpg"), _encode(bgr, ".png")
    depth = checker.collect(Image, "cam/depth/image")
    pub = checker.node.create_publisher(CompressedImage, TOPIC, 5)
    setup = OfflineSetup({**NODE, "cameras.cam.transport": "compressed"})
    with _start(tmp_path, domain_id) as proc:
        setup.load()  # the reference core, while the node starts
        checker.spin_until(lambda: pub.get_subscription_count() > 0, 90, "node subscribed to the compressed topic")
        assert checker.node.count_subscribers("cam/image_raw") == 0  # the raw topic is not subscribed
        jpeg_stamps: set = set()
        checker.publish_until(pub, _sender(checker, pub, jpeg, "rgb8; jpeg compressed bgr8", jpeg_stamps),
                              lambda: _depth_of(depth, jpeg_stamps) is not None, 120, "depth of a JPEG frame")
        png_stamps: set = set()
        checker.publish_until(pub, _sender(checker, pub, png, "png", png_stamps),
                              lambda: _depth_of(depth, png_stamps) is not None, 120, "depth of a PNG frame")
        assert proc.poll() is None
    decoded = conv.compressed_to_image(CompressedImage(format="jpeg", data=jpeg))
    assert not np.array_equal(conv.image_to_rgb(decoded), bgr[:, :, ::-1])  # JPEG is lossy: a real difference
    d_jpeg, d_png = _depth_of(depth, jpeg_stamps), _depth_of(depth, png_stamps)
    np.testing.assert_array_equal(d_jpeg, _core_depth(setup, decoded))
    original = conv.rgb_to_image(np.ascontiguousarray(bgr[:, :, ::-1]), Header(frame_id="cam_optical_frame"))
    np.testing.assert_array_equal(d_png, _core_depth(setup, original))  # = a raw camera sending the original
    assert not np.array_equal(d_jpeg, d_png)  # the comparison can tell the two inputs apart


def test_corrupt_jpeg_is_counted_and_the_next_good_frame_is_processed(tmp_path, domain_id, checker):
    """Truncated JPEG and garbage: counted as bad_input, nothing published, the node lives on."""
    jpeg = _encode(_photo_bgr(), ".jpg")
    bad = [jpeg[: len(jpeg) // 2], b"\xff\xd8\xff" + bytes(64) + b"\xff\xd9", b"garbage, not an image"]
    depth = checker.collect(Image, "cam/depth/image")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    pub = checker.node.create_publisher(CompressedImage, TOPIC, 5)
    n_sent = [0]

    def corrupt() -> CompressedImage:
        n_sent[0] += 1
        stamp = conv.ns_to_stamp(checker.node.get_clock().now().nanoseconds)
        return CompressedImage(header=Header(stamp=stamp, frame_id="cam"), format="jpeg",
                               data=bad[n_sent[0] % len(bad)])

    def bad_input() -> float:
        return diag_values(diags[-1]).get("bad_input", 0) if diags else 0

    with _start(tmp_path, domain_id) as proc:
        checker.spin_until(lambda: pub.get_subscription_count() > 0, 90, "node subscribed to the compressed topic")
        checker.publish_until(pub, corrupt, lambda: bad_input() >= len(bad), 120, "three corrupt frames counted")
        assert not depth and proc.poll() is None
        good: set = set()
        checker.publish_until(pub, _sender(checker, pub, jpeg, "jpeg", good),
                              lambda: _depth_of(depth, good) is not None, 120, "depth of the next good frame")
        assert proc.poll() is None
    log = (tmp_path / "node.log").read_text()
    assert "dropped a set: CompressedImage" in log or "dropped a set: cannot decode CompressedImage" in log, log
    assert "Traceback" not in log


def test_rig_player_streams_each_photo_as_it_is_with_a_fresh_stamp_raw_and_jpeg(tmp_path, domain_id, checker):
    """rig_player serializes a photo once and rewrites only its stamp at each tick.

    Every message must still be the photo (raw: exactly; JPEG: within its loss), with its own, increasing
    stamp and the camera's frame.
    """
    from rclpy.qos import qos_profile_sensor_data

    photo_rgb = cv2.imread(str(EXAMPLES / "SOH_000.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    for transport, kind, topic in (("raw", Image, "left/image_raw"),
                                   ("compressed", CompressedImage, "left/image_raw/compressed")):
        got = checker.collect(kind, topic, qos_profile_sensor_data)
        yaml = write_params(tmp_path / f"player_{transport}.yaml", "rig_player", {
            "camera_names": ["left"], "sources": [f"image:{EXAMPLES / 'SOH_000.png'}"], "rate_hz": 20.0,
            "transport": transport})
        with process("rig_player", yaml, domain_id, tmp_path / f"player_{transport}.log"):
            checker.spin_until(lambda got=got: len(got) >= 4, 30, f"4 {transport} frames")
        stamps = [conv.stamp_to_ns(m.header.stamp) for m in got]
        assert all(b > a for a, b in zip(stamps, stamps[1:])), stamps
        assert {m.header.frame_id for m in got} == {"left_optical_frame"}
        for m in got[:2]:
            if transport == "raw":
                assert np.array_equal(conv.image_to_rgb(m), photo_rgb)
            else:
                assert m.format == "rgb8; jpeg compressed bgr8"
                rgb = conv.image_to_rgb(conv.compressed_to_image(m))
                assert rgb.shape == photo_rgb.shape
                assert np.abs(rgb.astype(np.int16) - photo_rgb).mean() < 3.0  # JPEG quality 90
