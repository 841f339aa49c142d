"""compressedDepth output: our encoder against an independent decoder written from the plugin's format description.

The description (compressed_depth_image_transport, ros-perception/image_transport_plugins, codec.cpp and
compression_common.h): ``format`` is "<encoding>; compressedDepth png"; ``data`` is a 12-byte ConfigHeader (int32
compression format, 0 = INV_DEPTH; float32 depthParam[2] = A, B; little-endian) followed by a 16-bit grey PNG.
32FC1: the PNG holds q, the depth is A / (q - B) (float32 arithmetic), q = 0 is NaN. 16UC1: the PNG is the image.
"""
import numpy as np
import pytest
from std_msgs.msg import Header

from da3_ros.ros import conversions as conv
from da3_ros.ros.conversions import compressed_depth as cd

HEADER = Header(frame_id="cam_optical_frame")


def decode_compressed_depth(msg) -> tuple[str, np.ndarray]:
    """(encoding, image) as the plugin's subscriber returns them; written from the description, not our encoder."""
    import cv2

    encoding, _, rest = msg.format.partition(";")
    assert rest.strip() == "compressedDepth png", msg.format
    data = bytes(msg.data)
    assert len(data) > 12
    fmt = int(np.frombuffer(data[:4], "<i4")[0])
    a, b = np.frombuffer(data[4:12], "<f4")
    png = data[12:]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert (png[24], png[25]) == (16, 0), "16-bit (bit depth 16), grey (colour type 0)"
    q = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert q.dtype == np.uint16 and q.ndim == 2
    if encoding == "16UC1":
        return encoding, q
    assert encoding == "32FC1" and fmt == 0  # INV_DEPTH
    with np.errstate(divide="ignore"):
        depth = np.where(q > 0, a / (q.astype(np.float32) - b), np.float32(np.nan)).astype(np.float32)
    return encoding, depth


def test_16uc1_round_trip_is_exact_to_the_mm():
    rng = np.random.default_rng(0)
    depth_m = rng.uniform(0.0, 70.0, (48, 64)).astype(np.float32)
    depth_m[0, :4] = [np.nan, np.inf, 0.0, -1.0]
    mm = conv.depth_to_mm(depth_m)
    msg = conv.mm_to_compressed_depth(mm, HEADER)
    assert msg.format == "16UC1; compressedDepth png" and msg.header.frame_id == HEADER.frame_id
    encoding, decoded = decode_compressed_depth(msg)
    assert encoding == "16UC1"
    np.testing.assert_array_equal(decoded, mm)
    ok = np.isfinite(depth_m) & (depth_m > 0) & (depth_m <= 65.535)
    assert np.abs(decoded[ok] / 1000.0 - depth_m[ok]).max() <= 0.0005 + 1e-6  # to the mm
    assert (decoded[~ok] == 0).all()  # REP 118: 0 = no reading
    with pytest.raises(conv.ConversionError, match="uint16"):
        conv.mm_to_compressed_depth(depth_m, HEADER)


def test_32fc1_round_trip_within_the_documented_quantisation_bound():
    rng = np.random.default_rng(1)
    depth = np.exp(rng.uniform(np.log(cd.MIN_DEPTH_M), np.log(cd.DEPTH_MAX_M), (64, 96))).astype(np.float32)
    depth[0, :6] = [np.nan, np.inf, -np.inf, 0.0, -2.0, cd.DEPTH_MAX_M]  # invalid, sky, ..., the range's end
    depth[1, :2] = [0.05, 1e-30]  # nearer than the range: clipped to its near end
    msg = conv.depth_to_compressed_depth(depth, HEADER)
    assert msg.format == "32FC1; compressedDepth png"
    encoding, decoded = decode_compressed_depth(msg)
    assert encoding == "32FC1" and decoded.shape == depth.shape
    assert np.isnan(decoded[0, :6]).all()  # as the plugin: q = 0, decoded NaN (sky's +Inf too)
    np.testing.assert_allclose(decoded[1, :2], cd.MIN_DEPTH_M, rtol=1e-6)
    body = depth[2:]
    bound = np.vectorize(cd.quantisation_error_m)(body.astype(np.float64))
    err = np.abs(decoded[2:].astype(np.float64) - body)
    assert (err <= bound * (1 + 1e-4) + 4 * np.spacing(body)).all(), float((err / bound).max())
    assert (err / bound).max() > 0.9  # the bound is what one sees, not a loose one


@pytest.mark.parametrize("depth_m, error_m", [(1.0, 5.0e-5), (5.0, 1.24e-3), (10.0, 4.95e-3), (20.0, 1.98e-2),
                                              (50.0, 0.124), (99.0, 0.490)])
def test_the_precision_the_readme_states(depth_m, error_m):
    """README (Topics): the largest 32FC1 error at a few distances, measured over the decoded values."""
    assert cd.quantisation_error_m(depth_m) == pytest.approx(error_m, rel=0.01)
    near = np.linspace(depth_m * 0.995, depth_m * 1.005, 4001, dtype=np.float32)[None, :]
    _, decoded = decode_compressed_depth(conv.depth_to_compressed_depth(near, HEADER))
    assert np.abs(decoded - near).max() == pytest.approx(error_m, rel=0.03)


def test_the_header_is_the_plugins_quantisation():
    """A, B are the plugin's formula for depth_quantization 100 (its default) and depth_max 100 m (its maximum)."""
    msg = conv.depth_to_compressed_depth(np.ones((2, 2), np.float32), HEADER)
    fmt, a, b = cd.CONFIG_HEADER.unpack(bytes(msg.data[:12]))
    z0, depth_max = 100.0, 100.0
    assert (fmt, a, b) == (0, z0 * (z0 + 1), 1 - z0 * (z0 + 1) / depth_max)
    with pytest.raises(conv.ConversionError, match=r"\(H, W\)"):
        conv.depth_to_compressed_depth(np.ones(4, np.float32), HEADER)
