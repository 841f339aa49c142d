"""ROS message <-> numpy conversions: every supported layout, exact round trips, and the errors."""
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Quaternion, Transform, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from da3_ros.ros import conversions as c
from da3_ros.core import geometry as g

HEADER = Header(stamp=Time(sec=12, nanosec=345), frame_id="cam0_optical")


def _rgb(hw=(7, 5), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(*hw, 3), dtype=np.uint8)


def _image_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image holding ``pixels`` (H, W[, C]) as given, rows padded with ``pad`` garbage bytes."""
    h, w = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if bigendian else "<")
    rows = pixels.astype(dtype).reshape(h, -1).view(np.uint8)
    garbage = np.random.default_rng(99).integers(0, 256, size=(h, pad), dtype=np.uint8)
    data = np.concatenate([rows, garbage], axis=1)
    return Image(height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=data.shape[1],
                 data=data.tobytes())


# ---------------------------------------------------------------------------------------------- stamps

def test_stamps_round_trip():
    t = c.ns_to_stamp(1_700_000_000_123_456_789)
    assert (t.sec, t.nanosec) == (1_700_000_000, 123_456_789)
    assert c.stamp_to_ns(t) == 1_700_000_000_123_456_789
    assert c.stamp_to_ns(Time(sec=3, nanosec=999_999_999)) == 3_999_999_999
    neg = c.ns_to_stamp(-1)
    assert (neg.sec, neg.nanosec) == (-1, 999_999_999) and c.stamp_to_ns(neg) == -1
    assert issubclass(c.ConversionError, ValueError)


# ---------------------------------------------------------------------------------------------- images

@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_image_to_rgb_8bit_colour(encoding, pad):
    rgb = _rgb()
    alpha = np.full(rgb.shape[:2] + (1,), 77, np.uint8)
    pix = rgb[..., ::-1] if encoding.startswith("bgr") else rgb
    if encoding.endswith("a8"):
        pix = np.concatenate([pix, alpha], axis=2)
    out = c.image_to_rgb(_image_msg(pix, encoding, pad))
    assert out.dtype == np.uint8 and out.shape == rgb.shape and out.flags.c_contiguous
    assert np.array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 3])
def test_image_to_rgb_mono8_replicates(pad):
    gray = _rgb()[..., 0]
    out = c.image_to_rgb(_image_msg(gray, "mono8", pad))
    assert out.shape == gray.shape + (3,)
    for ch in range(3):
        assert np.array_equal(out[..., ch], gray)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 3])  # an odd pad leaves every other 16-bit row unaligned
@pytest.mark.parametrize("encoding", ["rgb16", "bgr16", "mono16"])
def test_image_to_rgb_16bit(encoding, pad, bigendian):
    rgb = _rgb(seed=1)
    expected_8 = rgb if encoding != "mono16" else np.repeat(rgb[..., :1], 3, axis=2)
    pix = rgb.astype(np.uint16) * 257  # 8-bit v as 16-bit v * 257: must come back exactly
    if encoding == "bgr16":
        pix = pix[..., ::-1]
    if encoding == "mono16":
        pix = pix[..., 0]
    out = c.image_to_rgb(_image_msg(pix, encoding, pad, bigendian))
    assert out.dtype == np.uint8 and np.array_equal(out, expected_8)


def test_image_to_rgb_16bit_rounding():
    v = np.array([[0, 128, 129, 385, 386, 65535, 65406, 65407]], np.uint16)
    out = c.image_to_rgb(_image_msg(v, "mono16", bigendian=True))[..., 0]
    assert np.array_equal(out, [[0, 0, 1, 1, 2, 255, 254, 255]])
    assert np.array_equal(out, np.rint(v.astype(float) / 257).astype(np.uint8))


def test_image_to_rgb_is_zero_copy_for_plain_rgb8():
    msg = _image_msg(_rgb(), "rgb8")
    assert np.shares_memory(c.image_to_rgb(msg), np.frombuffer(msg.data, np.uint8))
    padded = _image_msg(_rgb(), "rgb8", pad=2)
    assert not np.shares_memory(c.image_to_rgb(padded), np.frombuffer(padded.data, np.uint8))


@pytest.mark.parametrize("encoding", ["yuv422", "bayer_rggb8", "32FC1", "16UC1", "8UC3", ""])
def test_image_to_rgb_rejects_unsupported_encodings(encoding):
    msg = Image(height=2, width=2, encoding=encoding, step=8, data=bytes(16))
    with pytest.raises(c.ConversionError, match=f"unsupported image encoding '{encoding}'"):
        c.image_to_rgb(msg)


def test_image_to_rgb_rejects_inconsistent_sizes():
    msg = _image_msg(_rgb((4, 5)), "rgb8", pad=1)  # step 16
    short = Image(height=4, width=5, encoding="rgb8", step=16, data=bytes(msg.data)[:63])
    with pytest.raises(c.ConversionError, match=r"63 bytes.*64"):
        c.image_to_rgb(short)
    narrow = Image(height=4, width=5, encoding="rgb8", step=14, data=bytes(64))
    with pytest.raises(c.ConversionError, match=r"step 14 < .* 15"):
        c.image_to_rgb(narrow)
    with pytest.raises(c.ConversionError, match="empty"):
        c.image_to_rgb(Image(height=0, width=5, encoding="rgb8", step=15))
    # a buffer of exactly step * height is enough, and a longer one is fine
    long = Image(height=4, width=5, encoding="rgb8", step=16, data=bytes(70))
    assert c.image_to_rgb(long).shape == (4, 5, 3)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_rgb_to_image(encoding):
    rgb = _rgb((6, 4), seed=2)
    msg = c.rgb_to_image(rgb, HEADER, encoding)
    assert (msg.height, msg.width, msg.step, msg.encoding, msg.is_bigendian) == (6, 4, 12, encoding, False)
    assert msg.header == HEADER
    first = bytes(msg.data[:3])
    assert first == (rgb[0, 0].tobytes() if encoding == "rgb8" else rgb[0, 0, ::-1].tobytes())
    assert np.array_equal(c.image_to_rgb(msg), rgb)
    with pytest.raises(c.ConversionError, match="'rgba8'"):
        c.rgb_to_image(rgb, HEADER, "rgba8")
    with pytest.raises(c.ConversionError):
        c.rgb_to_image(rgb[..., :2], HEADER)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_full_hd_round_trip(encoding):
    rgb = _rgb((1080, 1920), seed=3)
    msg = c.rgb_to_image(rgb, HEADER, encoding)
    assert len(msg.data) == 1080 * 1920 * 3
    assert np.array_equal(c.image_to_rgb(msg), rgb)


def test_messages_survive_serialisation():
    from rclpy.serialization import deserialize_message, serialize_message

    rgb = _rgb((20, 30), seed=4)
    img = deserialize_message(serialize_message(c.rgb_to_image(rgb, HEADER, "bgr8")), Image)
    assert np.array_equal(c.image_to_rgb(img), rgb)
    pts = np.random.default_rng(4).normal(size=(11, 3)).astype(np.float32)
    cloud = deserialize_message(serialize_message(c.xyz_rgb_to_pointcloud2(pts, HEADER, rgb[0, :11])),
                                PointCloud2)
    back, colors = c.pointcloud2_to_xyz_rgb(cloud)
    assert np.array_equal(back, pts) and np.array_equal(colors, rgb[0, :11])


# ---------------------------------------------------------------------------------------- depth & masks

def test_depth_32fc1_round_trip_is_bit_exact():
    depth = np.random.default_rng(5).uniform(0.1, 50, size=(9, 13)).astype(np.float32)
    depth[0, 0], depth[1, 1], depth[2, 2] = np.nan, np.inf, 0.0
    msg = c.depth_to_image(depth, HEADER)
    assert (msg.encoding, msg.step, msg.height, msg.width, msg.is_bigendian) == ("32FC1", 52, 9, 13, False)
    assert bytes(msg.data) == depth.astype("<f4").tobytes()
    back = c.image_to_array(msg)
    assert back.dtype == np.float32 and back.shape == (9, 13)
    assert np.array_equal(back.view(np.uint32), depth.view(np.uint32))


def test_image_to_array_big_endian_and_padding():
    depth = np.random.default_rng(6).uniform(0.1, 50, size=(5, 4)).astype(np.float32)
    back = c.image_to_array(_image_msg(depth, "32FC1", pad=6, bigendian=True))
    assert back.dtype.isnative and np.array_equal(back, depth)
    mm = np.random.default_rng(6).integers(0, 65536, size=(5, 4), dtype=np.uint16)
    back = c.image_to_array(_image_msg(mm, "16UC1", pad=1, bigendian=True))
    assert back.dtype == np.uint16 and np.array_equal(back, mm)
    with pytest.raises(c.ConversionError, match="'rgb8'"):
        c.image_to_array(_image_msg(_rgb(), "rgb8"))
    with pytest.raises(c.ConversionError, match="bytes"):
        c.image_to_array(Image(height=5, width=4, encoding="32FC1", step=16, data=bytes(79)))


def test_depth_16uc1_millimetres():
    depth = np.array([[1.2344, 1.2346, np.nan, np.inf, -np.inf],
                      [-1.0, 0.0, 65.535, 65.5356, 70.0],
                      [0.0004, 0.0006, 0.001, 12.0, 1e30]], np.float32)
    msg = c.depth_to_image_16uc1_mm(depth, HEADER)
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("16UC1", 10, False)
    mm = c.image_to_array(msg)
    assert mm.dtype == np.uint16
    assert np.array_equal(mm, [[1234, 1235, 0, 0, 0], [0, 0, 65535, 0, 0], [0, 1, 1, 12000, 0]])
    assert bytes(msg.data[:2]) == (1234).to_bytes(2, "little")
    rand = np.random.default_rng(7).uniform(0.01, 65.0, size=(30, 40)).astype(np.float32)
    back_m = c.image_to_array(c.depth_to_image_16uc1_mm(rand, HEADER)) / 1000.0
    assert np.abs(back_m - rand).max() <= 0.0005 + 1e-6


def test_mono8_masks():
    mask = np.random.default_rng(8).random((6, 7)) > 0.5
    msg = c.array_to_image(mask, HEADER, "mono8")
    assert (msg.encoding, msg.step) == ("mono8", 7)
    back = c.image_to_array(msg)
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 255}
    assert np.array_equal(back == 255, mask)
    gray = _rgb((6, 7))[..., 1]
    assert np.array_equal(c.image_to_array(c.array_to_image(gray, HEADER, "mono8")), gray)
    with pytest.raises(c.ConversionError, match="int64"):
        c.array_to_image(np.zeros((2, 2), np.int64), HEADER, "mono8")
    with pytest.raises(c.ConversionError, match="'bgr8'"):
        c.array_to_image(gray, HEADER, "bgr8")


# ----------------------------------------------------------------------------------------- camera_info

K = np.array([[912.5, 0.25, 641.3], [0.0, 905.75, 362.1], [0.0, 0.0, 1.0]])


def test_camera_info_round_trip():
    msg = c.make_camera_info(K, (720, 1280), HEADER)
    assert (msg.height, msg.width, msg.distortion_model) == (720, 1280, "plumb_bob")
    assert np.array_equal(msg.k, K.ravel())
    assert np.array_equal(np.reshape(msg.p, (3, 4)), np.c_[K, np.zeros(3)])
    assert np.array_equal(msg.r, np.eye(3).ravel())
    assert list(msg.d) == [0.0] * 5
    assert msg.header == HEADER
    K_back, hw = c.camera_info_to_K(msg)
    assert K_back.dtype == np.float64 and np.array_equal(K_back, K) and hw == (720, 1280)
    D = [0.1, -0.2, 0.001, 0.002, 0.05, 0.0, 0.0, 0.01]
    msg = c.make_camera_info(K, (720, 1280), HEADER, D, "rational_polynomial")
    assert list(msg.d) == D and msg.distortion_model == "rational_polynomial"
    assert len(c.make_camera_info(K, (1, 1), HEADER, distortion_model="equidistant").d) == 4


def test_camera_info_zero_K_is_an_error():
    msg = CameraInfo(height=480, width=640)
    msg.header.frame_id = "cam_left"
    with pytest.raises(c.ConversionError, match="frame .cam_left. has an all-zero K"):
        c.camera_info_to_K(msg)
    bad = c.make_camera_info(np.diag([-1.0, 1.0, 1.0]), (480, 640), HEADER)
    with pytest.raises(c.ConversionError, match="invalid K"):
        c.camera_info_to_K(bad)


def test_camera_info_roi_and_binning_follow_the_pixels():
    msg = c.make_camera_info(K, (720, 1280), HEADER)
    msg.binning_x, msg.binning_y = 2, 4
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 40, 800, 600
    K_img, hw = c.camera_info_to_K(msg)
    assert hw == (150, 400)
    X = np.random.default_rng(9).uniform([-1, -1, 2], [1, 1, 9], size=(20, 3))
    uv_full = (K @ X.T).T
    uv_full = uv_full[:, :2] / uv_full[:, 2:]
    uv_img = (K_img @ X.T).T
    uv_img = uv_img[:, :2] / uv_img[:, 2:]
    # a binned pixel's centre is the mean of the centres of the full pixels it merges
    expected = (uv_full - [100, 40] + 0.5) / [2, 4] - 0.5
    np.testing.assert_allclose(uv_img, expected, atol=1e-9)
    msg.binning_x = msg.binning_y = 0  # 0 means no binning, and a full-size roi means no roi
    msg.roi.x_offset = msg.roi.y_offset = 0
    msg.roi.width, msg.roi.height = 1280, 720
    K_same, hw = c.camera_info_to_K(msg)
    assert np.array_equal(K_same, K) and hw == (720, 1280)


# ------------------------------------------------------------------------------------------ PointCloud2

def test_pointcloud_layout_and_round_trip():
    rng = np.random.default_rng(10)
    pts = rng.normal(size=(100, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(100, 3), dtype=np.uint8)
    rgb[0], rgb[1], rgb[2] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    msg = c.xyz_rgb_to_pointcloud2(pts, HEADER, rgb)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 100, 16, 1600)
    assert msg.is_dense is True and msg.is_bigendian is False and len(msg.data) == 1600
    raw = bytes(msg.data)
    assert raw[:12] == pts[0].astype("<f4").tobytes()
    packed = [int.from_bytes(raw[16 * i + 12:16 * i + 16], "little") for i in range(3)]
    assert packed == [0x00FF0000, 0x0000FF00, 0x000000FF]
    r, gr, b = rgb[50].astype(np.uint32)
    assert int.from_bytes(raw[16 * 50 + 12:16 * 51], "little") == (r << 16) | (gr << 8) | b
    back, colors = c.pointcloud2_to_xyz_rgb(msg)
    assert back.dtype == np.float32 and np.array_equal(back, pts)
    assert colors.dtype == np.uint8 and np.array_equal(colors, rgb)


def test_pointcloud_without_colour_and_empty():
    pts = np.random.default_rng(11).normal(size=(7, 3)).astype(np.float32)
    msg = c.xyz_rgb_to_pointcloud2(pts, HEADER)
    assert [f.name for f in msg.fields] == ["x", "y", "z"]
    assert (msg.point_step, msg.row_step, len(msg.data)) == (12, 84, 84)
    back, colors = c.pointcloud2_to_xyz_rgb(msg)
    assert colors is None and np.array_equal(back, pts)
    empty = c.xyz_rgb_to_pointcloud2(np.zeros((0, 3), np.float32), HEADER, np.zeros((0, 3), np.uint8))
    assert (empty.width, empty.row_step, len(empty.data)) == (0, 0, 0)
    back, colors = c.pointcloud2_to_xyz_rgb(empty)
    assert back.shape == (0, 3) and colors.shape == (0, 3)
    pts[3, 1] = np.nan
    assert c.xyz_rgb_to_pointcloud2(pts, HEADER).is_dense is False
    with pytest.raises(c.ConversionError):
        c.xyz_rgb_to_pointcloud2(pts, HEADER, np.zeros((6, 3), np.uint8))


def test_pointcloud_reader_follows_offsets_padding_and_byte_order():
    rng = np.random.default_rng(12)
    h, w, step, row_step = 2, 3, 32, 3 * 32 + 8
    pts = rng.normal(size=(h, w, 3))
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    data = bytearray(rng.integers(0, 256, size=row_step * h, dtype=np.uint8).tobytes())
    for i in range(h):
        for j in range(w):
            base = i * row_step + j * step
            data[base + 8:base + 32] = pts[i, j].astype(">f8").tobytes()  # x, y, z float64 at 8, 16, 24
            packed = 0xFF000000 | int(rgb[i, j, 0]) << 16 | int(rgb[i, j, 1]) << 8 | int(rgb[i, j, 2])
            data[base:base + 4] = packed.to_bytes(4, "big")  # rgba uint32 at 0
    fields = [PointField(name="rgba", offset=0, datatype=PointField.UINT32, count=1)] + [
        PointField(name=n, offset=8 + 8 * k, datatype=PointField.FLOAT64, count=1)
        for k, n in enumerate("xyz")]
    msg = PointCloud2(height=h, width=w, fields=fields, is_bigendian=True, point_step=step, row_step=row_step,
                      data=bytes(data))
    back, colors = c.pointcloud2_to_xyz_rgb(msg)
    assert np.array_equal(back, pts.reshape(-1, 3).astype(np.float32))
    assert np.array_equal(colors, rgb.reshape(-1, 3))
    msg.data = bytes(data[:-9])
    with pytest.raises(c.ConversionError, match="bytes"):
        c.pointcloud2_to_xyz_rgb(msg)
    msg.fields = fields[:3]
    with pytest.raises(c.ConversionError, match="'z'"):
        c.pointcloud2_to_xyz_rgb(msg)


# ------------------------------------------------------------------------------------------- transforms

def _random_T(rng):
    T = np.eye(4)
    T[:3, :3] = g.R_from_quaternion(rng.normal(size=4))
    T[:3, 3] = rng.normal(size=3)
    return T


def test_transform_and_pose_round_trip():
    rng = np.random.default_rng(13)
    for _ in range(20):
        T = _random_T(rng)
        tf = c.T_to_transform(T)
        assert tf.rotation.w >= 0
        q = [tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w]
        assert np.array_equal(q, g.quaternion_from_R(T[:3, :3]))  # the shared maths, not a copy
        assert [tf.translation.x, tf.translation.y, tf.translation.z] == T[:3, 3].tolist()
        np.testing.assert_allclose(c.transform_to_T(tf), T, atol=1e-12)
        pose = c.T_to_pose(T)
        assert [pose.position.x, pose.position.y, pose.position.z] == T[:3, 3].tolist()
        np.testing.assert_allclose(c.pose_to_T(pose), T, atol=1e-12)
    # an unnormalised quaternion in a message is normalised, not applied as a scaled matrix
    tf = Transform(translation=Vector3(x=1.0), rotation=Quaternion(x=0.0, y=0.0, z=2.0, w=0.0))
    np.testing.assert_allclose(c.transform_to_T(tf)[:3, :3], np.diag([-1.0, -1.0, 1.0]), atol=1e-15)
    with pytest.raises(c.ConversionError):
        c.T_to_transform(np.eye(3))


def test_transform_stamped_and_tf_message():
    T = _random_T(np.random.default_rng(14))
    ts = c.transform_stamped(T, "base_link", "cam1_optical", 5_000_000_007)
    assert (ts.header.frame_id, ts.child_frame_id) == ("base_link", "cam1_optical")
    assert (ts.header.stamp.sec, ts.header.stamp.nanosec) == (5, 7)
    np.testing.assert_allclose(c.transform_to_T(ts.transform), T, atol=1e-12)
    ts2 = c.transform_stamped(np.eye(4), "cam0_optical", "cam0_optical_da3", Time(sec=1, nanosec=2))
    assert ts2.header.stamp == Time(sec=1, nanosec=2) and ts2.transform.rotation.w == 1.0
    msg = c.tf_message([ts, ts2])
    assert [t.child_frame_id for t in msg.transforms] == ["cam1_optical", "cam0_optical_da3"]


def test_stamp_from_serialized_bytes_without_deserialising():
    """The raw-subscription fast path reads the same stamp rclpy would deserialise, for any image size."""
    from rclpy.serialization import serialize_message

    from da3_ros.ros.conversions import ConversionError, stamp_ns_from_cdr

    for sec, nanosec, hw in [(0, 0, (1, 1)), (1_700_000_000, 999_999_999, (680, 1208)), (-5, 7, (2, 3))]:
        msg = Image(height=hw[0], width=hw[1], encoding="rgb8", step=3 * hw[1], data=bytes(3 * hw[0] * hw[1]))
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        msg.header.frame_id = "cam"
        assert stamp_ns_from_cdr(serialize_message(msg)) == sec * 1_000_000_000 + nanosec
    for bad in (b"", b"\x00\x01\x00\x00", b"\x07\x07" + bytes(20)):
        with pytest.raises(ConversionError):
            stamp_ns_from_cdr(bad)


def test_a_serialized_image_restamped_deserialises_to_the_same_image_with_the_new_stamp():
    """rig_player serializes a photo once and writes only the stamp at each tick."""
    from rclpy.serialization import deserialize_message, serialize_message

    from da3_ros.ros.conversions import ConversionError, stamp_cdr, stamp_ns_from_cdr, stamp_to_ns

    rgb = np.random.default_rng(3).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    msg = Image(height=4, width=5, encoding="rgb8", step=15, data=rgb.tobytes())
    msg.header.frame_id = "left_optical_frame"
    data = serialize_message(msg)
    for ns in (0, 1_700_000_000_123_456_789, 5 * 1_000_000_000 - 1):
        out = deserialize_message(stamp_cdr(data, ns), Image)
        assert stamp_to_ns(out.header.stamp) == ns == stamp_ns_from_cdr(stamp_cdr(data, ns))
        assert out.header.frame_id == "left_optical_frame" and bytes(out.data) == rgb.tobytes()
    assert stamp_ns_from_cdr(data) == 0  # the original is not changed
    with pytest.raises(ConversionError):
        stamp_cdr(b"\x07\x07" + bytes(20), 1)


# ------------------------------------------------------------------------------------- compressed images

def _photo_small():
    """The real example photo, downscaled (bgr, as OpenCV reads it)."""
    import cv2

    from conftest import EXAMPLES

    bgr = cv2.imread(str(EXAMPLES / "SOH_000.png"), cv2.IMREAD_COLOR)
    return cv2.resize(bgr, (302, 170), interpolation=cv2.INTER_AREA)


def _compressed(pixels: np.ndarray, ext: str, fmt: str = "") -> CompressedImage:
    import cv2

    ok, buf = cv2.imencode(ext, pixels)
    assert ok
    return CompressedImage(header=HEADER, format=fmt or ext.lstrip("."), data=buf.tobytes())


def test_compressed_jpeg_decodes_to_bgr8_with_the_header():
    """JPEG -> bgr8 with the same header; pixels = OpenCV's decode; within JPEG loss of the original."""
    import cv2

    bgr = _photo_small()
    msg = _compressed(bgr, ".jpg", "rgb8; jpeg compressed bgr8")  # image_transport's format string
    img = c.compressed_to_image(msg)
    assert (img.encoding, img.height, img.width, img.step) == ("bgr8", 170, 302, 302 * 3)
    assert img.header == HEADER and not img.is_bigendian
    expected = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(c.image_to_rgb(img), expected[:, :, ::-1])
    assert np.abs(c.image_to_rgb(img).astype(int) - bgr[:, :, ::-1]).mean() < 4  # JPEG loss, not garbage


def test_compressed_png_is_lossless_in_every_layout():
    """PNG: colour, mono, 16-bit mono/colour (values kept, little-endian) and alpha (dropped)."""
    bgr = _photo_small()
    img = c.compressed_to_image(_compressed(bgr, ".png"))
    assert img.encoding == "bgr8"
    np.testing.assert_array_equal(c.image_to_rgb(img), bgr[:, :, ::-1])
    mono = bgr[:, :, 1].copy()
    img = c.compressed_to_image(_compressed(mono, ".png"))
    assert img.encoding == "mono8"
    np.testing.assert_array_equal(c.image_to_array(img), mono)
    m16 = (np.arange(170 * 302, dtype=np.uint16).reshape(170, 302) * 7)
    img = c.compressed_to_image(_compressed(m16, ".png"))
    assert (img.encoding, img.step, img.is_bigendian) == ("mono16", 302 * 2, False)
    np.testing.assert_array_equal(np.frombuffer(bytes(img.data), "<u2").reshape(170, 302), m16)
    c16 = np.stack([m16, m16 // 2, m16 // 3], axis=2)
    img = c.compressed_to_image(_compressed(c16, ".png"))
    assert img.encoding == "bgr16"
    np.testing.assert_array_equal(c.image_to_rgb(img), ((c16[:, :, ::-1].astype(np.uint32) + 128) // 257))
    bgra = np.concatenate([bgr, np.full((170, 302, 1), 7, np.uint8)], axis=2)
    img = c.compressed_to_image(_compressed(bgra, ".png"))
    assert img.encoding == "bgr8"
    np.testing.assert_array_equal(c.image_to_rgb(img), bgr[:, :, ::-1])


def test_bad_compressed_images_raise_with_the_reason():
    """Truncated JPEG (libjpeg would fill it grey), truncated PNG, garbage, empty, compressedDepth: ConversionError."""
    jpeg = bytes(_compressed(_photo_small(), ".jpg").data)
    png = bytes(_compressed(_photo_small(), ".png").data)
    cases = [("truncated JPEG", jpeg[: len(jpeg) // 2]), ("truncated JPEG", jpeg[:-2]),
             ("corrupt PNG", png[: len(png) // 2]), ("neither JPEG nor PNG", b"not an image at all"),
             ("neither JPEG nor PNG", b""), ("corrupt JPEG", b"\xff\xd8\xff" + bytes(40) + b"\xff\xd9")]
    for reason, data in cases:
        with pytest.raises(c.ConversionError, match=reason):
            c.compressed_to_image(CompressedImage(header=HEADER, format="jpeg", data=data))
    depth = CompressedImage(header=HEADER, format="16UC1; compressedDepth png", data=bytes(12) + png)
    with pytest.raises(c.ConversionError, match="compressedDepth .* is not supported"):
        c.compressed_to_image(depth)


def test_stamp_from_serialized_compressed_image():
    """CompressedImage's CDR also starts with its header: the stamp is read without deserialising."""
    from rclpy.serialization import serialize_message

    for sec, nanosec in [(0, 0), (1_700_000_000, 999_999_999), (-5, 7)]:
        msg = CompressedImage(format="jpeg", data=bytes(range(256)) * 40)
        msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, nanosec, "camera_optical"
        assert c.stamp_ns_from_cdr(serialize_message(msg)) == sec * 1_000_000_000 + nanosec


def test_input_transports_topics_types_and_decode():
    """raw/compressed: image_transport's topic naming; decode of serialised bytes; the parameter's choices."""
    from rclpy.serialization import serialize_message

    from da3_ros.core.params import CAMERA_PARAMS
    from da3_ros.ros.transport import COMPRESSED, RAW, TRANSPORTS, input_transport

    assert next(p for p in CAMERA_PARAMS if p.name == "transport").choices == TRANSPORTS
    assert input_transport("raw") is RAW and input_transport("compressed") is COMPRESSED
    assert (RAW.topic("cam/image_raw"), RAW.msg_type) == ("cam/image_raw", Image)
    assert (COMPRESSED.topic("/cam/image_raw"), COMPRESSED.msg_type) == ("/cam/image_raw/compressed",
                                                                         CompressedImage)
    with pytest.raises(ValueError, match="'theora' is not allowed: one of raw, compressed"):
        input_transport("theora")
    bgr = _photo_small()
    raw = c.rgb_to_image(bgr[:, :, ::-1].copy(), HEADER)
    assert RAW.decode(serialize_message(raw)) == raw
    img = COMPRESSED.decode(serialize_message(_compressed(bgr, ".png")))
    assert img.header == HEADER
    np.testing.assert_array_equal(c.image_to_rgb(img), bgr[:, :, ::-1])
    with pytest.raises(c.ConversionError, match="cannot deserialise a CompressedImage"):
        COMPRESSED.decode(serialize_message(_compressed(bgr, ".png"))[:30])


def test_range_messages_become_points_in_metres_in_their_frame():
    """LaserScan (REP 117: out of range dropped), depth 16UC1 mm / 32FC1 m (0, NaN: no return), PointCloud2."""
    import math

    from sensor_msgs.msg import LaserScan

    from da3_ros.core.range_scale import RangeKind
    from da3_ros.ros.conversions.ranges import range_points

    scan = LaserScan(angle_min=-math.pi / 2, angle_increment=math.pi / 2, range_min=0.5, range_max=10.0,
                     ranges=[2.0, 0.1, float("inf"), 4.0])
    np.testing.assert_allclose(range_points(RangeKind.SCAN, scan), [[0.0, -2.0, 0.0], [-4.0, 0.0, 0.0]], atol=1e-12)
    K = [100.0, 0.0, 2.0, 0.0, 100.0, 1.0, 0.0, 0.0, 1.0]
    info = CameraInfo(height=2, width=4, k=K)
    mm = c.array_to_image(np.array([[0, 1000, 2000, 0], [0, 0, 0, 3500]], np.uint16), Header(), "16UC1")
    points = range_points(RangeKind.DEPTH, mm, info)
    np.testing.assert_allclose(points[:, 2], [1.0, 2.0, 3.5])
    np.testing.assert_allclose(points[1], [(2 - 2.0) / 100 * 2.0, (0 - 1.0) / 100 * 2.0, 2.0], rtol=1e-6)
    m = c.depth_to_image(np.array([[np.nan, 1.5, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0]], np.float32), Header())
    assert len(range_points(RangeKind.DEPTH, m, info)) == 6
    with pytest.raises(c.ConversionError, match="without its camera_info"):
        range_points(RangeKind.DEPTH, m, None)
    with pytest.raises(c.ConversionError, match="camera_info 3x4"):
        range_points(RangeKind.DEPTH, m, CameraInfo(height=3, width=4, k=K))
    cloud = c.xyz_rgb_to_pointcloud2(np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0]], np.float32), Header())
    np.testing.assert_array_equal(range_points(RangeKind.CLOUD, cloud), [[1.0, 2.0, 3.0]])
    with pytest.raises(c.ConversionError, match="kind scan"):
        range_points(RangeKind.SCAN, cloud)
