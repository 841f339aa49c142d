"""ROS 2 messages <-> numpy: images, camera_info, PointCloud2, transforms and stamps.

Only message classes are imported (no node APIs), and no sensor_msgs_py / cv_bridge. Message payloads are
always assigned as ``bytes``: rosidl copies a bytes object into its array in one memcpy, whereas a
memoryview or ndarray is walked element by element (~200 ms for a 1080p image). Received payloads are read
with ``np.frombuffer`` without a copy, so arrays returned here may share memory with ``msg.data``.
Outgoing multi-byte data is little-endian (``is_bigendian = False``); incoming data of either byte order is
returned in native order.
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, TransformStamped, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, LaserScan, PointCloud2, PointField
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from da3_ros.core.geometry import R_from_quaternion, quaternion_from_R

NS_PER_S = 1_000_000_000
MAX_16UC1_M = 65.535  # the largest depth a 16UC1 millimetre image can hold


class ConversionError(ValueError):
    """A message cannot be converted: unsupported encoding or inconsistent sizes."""


# ---------------------------------------------------------------------------------------------- stamps

def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def stamp_ns_from_cdr(data: bytes) -> int:
    """The header stamp of a serialized message that starts with a std_msgs/Header (Image, CameraInfo, ...).

    Reads 12 bytes instead of deserialising megabytes of pixels: CDR puts a 4-byte encapsulation header
    (representation id 0x0000 big-endian, 0x0001 little-endian) before ``stamp.sec`` (int32) and
    ``stamp.nanosec`` (uint32). Raises ConversionError on anything else.
    """
    if len(data) < 12 or data[0] != 0 or data[1] not in (0, 1):
        raise ConversionError(f"not a CDR-serialized message with a header ({len(data)} bytes, "
                              f"encapsulation {bytes(data[:2]).hex()})")
    order = "little" if data[1] == 1 else "big"
    sec = int.from_bytes(data[4:8], order, signed=True)
    nanosec = int.from_bytes(data[8:12], order, signed=False)
    if nanosec >= 1_000_000_000:
        raise ConversionError(f"stamp nanosec {nanosec} out of range in a serialized message")
    return sec * 1_000_000_000 + nanosec


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (nanosec always in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


# ---------------------------------------------------------------------------------------------- images

# encoding -> (channels, bytes per channel, numpy kind)
_IMAGE_LAYOUTS = {
    "rgb8": (3, 1, "u"), "bgr8": (3, 1, "u"), "rgba8": (4, 1, "u"), "bgra8": (4, 1, "u"),
    "mono8": (1, 1, "u"),
    "rgb16": (3, 2, "u"), "bgr16": (3, 2, "u"), "mono16": (1, 2, "u"),
}
_ARRAY_LAYOUTS = {"32FC1": (1, 4, "f"), "16UC1": (1, 2, "u"), "mono8": (1, 1, "u")}


def _pixels(msg: Image, layout: tuple[int, int, str]) -> np.ndarray:
    """The (H, W, C) pixels of ``msg`` in native byte order, a view of msg.data where possible."""
    channels, size, kind = layout
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise ConversionError(f"{msg.encoding} image is empty ({w}x{h})")
    row_bytes = w * channels * size
    if step < row_bytes:
        raise ConversionError(f"{msg.encoding} image {w}x{h}: step {step} < width * bytes per pixel "
                              f"= {row_bytes}")
    n = len(msg.data)
    if n < step * h:
        raise ConversionError(f"{msg.encoding} image {w}x{h}: data has {n} bytes, step * height = {step * h}")
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=step * h).reshape(h, step)[:, :row_bytes]
    if size == 1:
        return rows.reshape(h, w, channels)
    # A strided view whose last axis is contiguous can be reinterpreted in place, padding and all.
    dtype = np.dtype(f"{'>' if msg.is_bigendian else '<'}{kind}{size}")
    pix = rows.view(dtype).reshape(h, w, channels)
    return pix if dtype.isnative else pix.astype(dtype.newbyteorder("="))


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB, C-contiguous.

    Supports rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8 (replicated to 3 channels) and rgb16, bgr16,
    mono16 (scaled to 8 bit as round(v / 257), so 65535 -> 255). Row padding (step > width * bytes per
    pixel) and is_bigendian are honoured. For unpadded rgb8 the result is a view of msg.data (no copy).
    """
    layout = _IMAGE_LAYOUTS.get(msg.encoding)
    if layout is None:
        raise ConversionError(f"unsupported image encoding {msg.encoding!r}; expected one of "
                              f"{sorted(_IMAGE_LAYOUTS)}")
    pix = _pixels(msg, layout)
    enc = msg.encoding
    if enc.startswith("bgr"):
        pix = pix[..., 2::-1]
    elif pix.shape[2] == 4:
        pix = pix[..., :3]
    if layout[1] == 2:
        # round(v * 255 / 65535) = round(v / 257), in integers; fits in 8 bit after the division
        pix = ((pix.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if pix.shape[2] == 1:
        return np.repeat(pix, 3, axis=2)
    return np.ascontiguousarray(pix)


def rgb_to_image(rgb: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image in ``encoding`` rgb8 or bgr8."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ConversionError(f"expected an HxWx3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    if encoding not in ("rgb8", "bgr8"):
        raise ConversionError(f"unsupported output encoding {encoding!r}; expected 'rgb8' or 'bgr8'")
    pix = rgb if encoding == "rgb8" else rgb[..., ::-1]
    h, w = rgb.shape[:2]
    return Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=False, step=w * 3,
                 data=pix.tobytes())


_JPEG_SOI, _JPEG_EOI, _PNG_SIGNATURE = b"\xff\xd8\xff", b"\xff\xd9", b"\x89PNG\r\n\x1a\n"
_JPEG_EOI_WINDOW = 64  # bytes at the end searched for EOI: some encoders pad after it


def _compressed_kind(msg: CompressedImage, data: bytes) -> str:
    """'jpeg' or 'png' from the payload's own magic bytes (``format`` strings vary between drivers)."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(_JPEG_SOI):
        # JPEG has no checksum and libjpeg decodes a cut-off stream into a grey-filled image without an error:
        # the end-of-image marker is the one cheap check that the whole frame is there
        if _JPEG_EOI not in data[-_JPEG_EOI_WINDOW:]:
            raise ConversionError(f"CompressedImage (format {msg.format!r}, {len(data)} bytes) is a truncated "
                                  "JPEG: no end-of-image marker (FFD9) at its end")
        return "jpeg"
    hint = ("; compressedDepth (image_transport's depth PNG with a config header) is not supported: publish "
            "the camera's colour image") if "compresseddepth" in msg.format.lower().replace(" ", "") else ""
    raise ConversionError(f"CompressedImage (format {msg.format!r}, {len(data)} bytes, starting "
                          f"{data[:8].hex() or 'empty'}) is neither JPEG nor PNG{hint}")


def compressed_to_image(msg: CompressedImage) -> Image:
    """sensor_msgs/CompressedImage (JPEG or PNG, as image_transport's ``compressed``) -> Image, same header.

    Decoded with OpenCV into bgr8 / mono8, or bgr16 / mono16 for a 16-bit PNG (values kept); an alpha channel
    is dropped. The kind is read from the payload's magic bytes, not from ``format``. Raises ConversionError,
    with the reason, for a payload that is not JPEG/PNG, a truncated JPEG (no end marker) or one the decoder
    rejects. A JPEG corrupted inside but complete may still decode (JPEG carries no checksum).
    """
    import cv2  # here, not at import: a node on raw cameras never loads OpenCV

    data = bytes(msg.data)
    kind = _compressed_kind(msg, data)
    pix = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # UNCHANGED: 16 bit, no EXIF turn
    if pix is None or pix.size == 0:
        raise ConversionError(f"cannot decode CompressedImage: a corrupt {kind.upper()} (format {msg.format!r}, "
                              f"{len(data)} bytes)")
    if pix.dtype not in (np.uint8, np.uint16):
        raise ConversionError(f"CompressedImage {kind.upper()} decodes to {pix.dtype}; expected 8 or 16 bit")
    if pix.ndim == 3 and pix.shape[2] == 1:
        pix = pix[:, :, 0]
    if pix.ndim == 3 and pix.shape[2] == 4:
        pix = pix[:, :, :3]
    if pix.ndim == 3 and pix.shape[2] != 3:
        raise ConversionError(f"CompressedImage {kind.upper()} decodes to {pix.shape[2]} channels; expected "
                              "1, 3 or 4")
    bits = 8 * pix.dtype.itemsize
    encoding = f"mono{bits}" if pix.ndim == 2 else f"bgr{bits}"
    h, w = pix.shape[:2]
    data_out = np.ascontiguousarray(pix).astype(f"<u{pix.dtype.itemsize}", copy=False).tobytes()
    return Image(header=msg.header, height=h, width=w, encoding=encoding, is_bigendian=False,
                 step=w * (1 if pix.ndim == 2 else 3) * pix.dtype.itemsize, data=data_out)


def array_to_image(a: np.ndarray, header: Header, encoding: str) -> Image:
    """(H, W) array -> single-channel sensor_msgs/Image, little-endian, unpadded.

    encoding: 32FC1 (any real dtype, cast to float32), 16UC1 (uint16) or mono8 (uint8 as is; bool as 0/255).
    """
    a = np.asarray(a)
    if a.ndim != 2:
        raise ConversionError(f"expected an (H, W) array for {encoding}, got shape {a.shape}")
    if encoding == "32FC1":
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ConversionError(f"cannot store dtype {a.dtype} as 32FC1")
        data = a.astype("<f4", copy=False)
    elif encoding == "16UC1":
        if a.dtype != np.uint16:
            raise ConversionError(f"16UC1 needs a uint16 array, got dtype {a.dtype}")
        data = a.astype("<u2", copy=False)
    elif encoding == "mono8":
        if a.dtype == bool:
            data = a.view(np.uint8) * np.uint8(255)
        elif a.dtype == np.uint8:
            data = a
        else:
            raise ConversionError(f"mono8 needs a uint8 or bool array, got dtype {a.dtype}")
    else:
        raise ConversionError(f"unsupported array encoding {encoding!r}; expected one of "
                              f"{sorted(_ARRAY_LAYOUTS)}")
    h, w = a.shape
    return Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=False,
                 step=w * data.dtype.itemsize, data=data.tobytes())


def image_to_array(msg: Image) -> np.ndarray:
    """Single-channel sensor_msgs/Image -> (H, W) array: 32FC1 float32, 16UC1 uint16 or mono8 uint8.

    Values are returned unchanged (16UC1 stays in its units, usually millimetres). Step padding and
    is_bigendian are honoured; unpadded native-order data is returned as a view of msg.data.
    """
    layout = _ARRAY_LAYOUTS.get(msg.encoding)
    if layout is None:
        raise ConversionError(f"unsupported array encoding {msg.encoding!r}; expected one of "
                              f"{sorted(_ARRAY_LAYOUTS)}")
    return _pixels(msg, layout)[..., 0]


def depth_to_image(depth: np.ndarray, header: Header) -> Image:
    """Depth (H, W) in metres -> 32FC1 Image (REP 118: NaN invalid, +Inf too far, both kept as is)."""
    return array_to_image(depth, header, "32FC1")


def depth_to_image_16uc1_mm(depth_m: np.ndarray, header: Header) -> Image:
    """Depth (H, W) in metres -> 16UC1 Image in millimetres (REP 118: 0 = no reading).

    NaN, +-Inf, non-positive depths and depths beyond 65.535 m (which would wrap) become 0; the rest is
    rounded to the nearest millimetre (a depth below 0.5 mm thus also reads 0).
    """
    depth_m = np.asarray(depth_m)
    with np.errstate(invalid="ignore", over="ignore"):
        mm = np.rint(depth_m.astype(np.float64) * 1000.0)
        ok = np.isfinite(mm) & (depth_m > 0) & (mm <= 65535.0)
    return array_to_image(np.where(ok, mm, 0.0).astype(np.uint16), header, "16UC1")


# ----------------------------------------------------------------------------------------- camera_info

def camera_info_to_K(msg: CameraInfo) -> tuple[np.ndarray, tuple[int, int]]:
    """sensor_msgs/CameraInfo -> (K (3, 3) float64, (height, width)) of the images the camera publishes.

    A non-default ROI and binning (REP 104) are applied, pixel centres exact: a binned pixel i covers
    full-resolution pixels b*i .. b*i + b - 1, so u' = (u - x_offset + 0.5) / b - 0.5 (image_geometry
    uses u' = (u - x_offset) / b, which is off by (b - 1) / (2 b) px).
    Raises ConversionError for an all-zero K (an uncalibrated camera) or an invalid one.
    """
    K = np.array(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.any(K):
        raise ConversionError(f"camera_info from frame {msg.header.frame_id!r} has an all-zero K "
                              "(uncalibrated)")
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(f"camera_info from frame {msg.header.frame_id!r} has an invalid K: "
                              f"{K.ravel().tolist()}")
    h, w = int(msg.height), int(msg.width)
    roi = msg.roi
    x0, y0 = 0, 0
    if roi.width > 0 and roi.height > 0 and (roi.width, roi.height) != (w, h):
        x0, y0, h, w = int(roi.x_offset), int(roi.y_offset), int(roi.height), int(roi.width)
    bx, by = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
    if (x0, y0, bx, by) != (0, 0, 1, 1):
        A = np.array([[1.0 / bx, 0.0, (0.5 - x0) / bx - 0.5], [0.0, 1.0 / by, (0.5 - y0) / by - 0.5],
                      [0.0, 0.0, 1.0]])
        K = A @ K
        h, w = h // by, w // bx
    return K, (h, w)


def make_camera_info(K: np.ndarray, hw: tuple[int, int], header: Header, D: np.ndarray | None = None,
                     distortion_model: str = "plumb_bob") -> CameraInfo:
    """CameraInfo for an (H, W) image with intrinsics K: P = [K | 0], R = identity, D zeros by default.

    The default D has the model's coefficient count (5 for plumb_bob, 8 for rational_polynomial, 4 for
    equidistant).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ConversionError(f"K must be (3, 3), got {K.shape}")
    if D is None:
        D = np.zeros({"rational_polynomial": 8, "equidistant": 4}.get(distortion_model, 5))
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(header=header, height=int(hw[0]), width=int(hw[1]), distortion_model=distortion_model,
                      d=[float(x) for x in np.asarray(D, dtype=np.float64).ravel()], k=K.ravel(),
                      r=np.eye(3).ravel(), p=P.ravel())


# ------------------------------------------------------------------------------------------ PointCloud2

_XYZ_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
               for i, n in enumerate("xyz")]
# rgb is declared FLOAT32 but holds the uint32 0x00RRGGBB bit pattern (PCL / RViz), so it is stored as <u4.
_FIELD_TYPES = {PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2",
                PointField.UINT16: "u2", PointField.INT32: "i4", PointField.UINT32: "u4",
                PointField.FLOAT32: "f4", PointField.FLOAT64: "f8"}


def xyz_rgb_to_pointcloud2(points: np.ndarray, header: Header, rgb: np.ndarray | None = None,
                           confidence: np.ndarray | None = None) -> PointCloud2:
    """Points (M, 3), optional colours (M, 3) uint8 and confidences (M,) -> unorganised PointCloud2 (height 1).

    Fields x, y, z FLOAT32 at offsets 0, 4, 8, then, when given, ``rgb`` (a FLOAT32 field holding the packed
    0x00RRGGBB uint32 bit pattern, as PCL and RViz expect) and ``confidence`` (FLOAT32), densely packed.
    is_dense is True exactly when every point is finite.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ConversionError(f"points must be (M, 3), got {points.shape}")
    m = points.shape[0]
    names, formats, fields = ["x", "y", "z"], ["<f4"] * 3, list(_XYZ_FIELDS)
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (m, 3) or rgb.dtype != np.uint8:
            raise ConversionError(f"rgb must be ({m}, 3) uint8, got shape {rgb.shape} dtype {rgb.dtype}")
        fields.append(PointField(name="rgb", offset=4 * len(names), datatype=PointField.FLOAT32, count=1))
        names.append("rgb")
        formats.append("<u4")
    if confidence is not None:
        confidence = np.asarray(confidence)
        if confidence.shape != (m,):
            raise ConversionError(f"confidence must be ({m},), got shape {confidence.shape}")
        fields.append(PointField(name="confidence", offset=4 * len(names), datatype=PointField.FLOAT32, count=1))
        names.append("confidence")
        formats.append("<f4")
    cloud = np.empty(m, dtype=np.dtype({"names": names, "formats": formats,
                                        "offsets": [4 * i for i in range(len(names))], "itemsize": 4 * len(names)}))
    cloud["x"], cloud["y"], cloud["z"] = points[:, 0], points[:, 1], points[:, 2]
    if rgb is not None:
        c = rgb.astype(np.uint32)
        cloud["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    if confidence is not None:
        cloud["confidence"] = confidence
    step = cloud.dtype.itemsize
    return PointCloud2(header=header, height=1, width=m, fields=fields, is_bigendian=False, point_step=step,
                       row_step=step * m, data=cloud.tobytes(), is_dense=bool(np.isfinite(points).all()))


def pointcloud2_field(msg: PointCloud2, name: str) -> np.ndarray:
    """One FLOAT32 field of an unorganised little-endian cloud (e.g. ``confidence``) as (M,) float32."""
    f = next((f for f in msg.fields if f.name == name), None)
    if f is None or f.datatype != PointField.FLOAT32:
        raise ConversionError(f"PointCloud2 has no FLOAT32 field {name!r}; has {[f.name for f in msg.fields]}")
    m = int(msg.width) * int(msg.height)
    return np.ndarray((m,), dtype="<f4", buffer=bytes(msg.data), offset=int(f.offset),
                      strides=(int(msg.point_step),)).copy()


def laser_scan(ranges: np.ndarray, header: Header, angle_min: float, angle_increment: float, range_min: float,
               range_max: float, scan_time_s: float = 0.0) -> LaserScan:
    """A sensor_msgs/LaserScan of (B,) ranges (+Inf: nothing seen in that direction, REP 117)."""
    ranges = np.asarray(ranges, dtype=np.float32)
    return LaserScan(header=header, angle_min=float(angle_min),
                     angle_max=float(angle_min + angle_increment * (len(ranges) - 1)),
                     angle_increment=float(angle_increment), time_increment=0.0, scan_time=float(scan_time_s),
                     range_min=float(range_min), range_max=float(range_max), ranges=ranges.tolist())


def pointcloud2_to_xyz_rgb(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None]:
    """PointCloud2 -> (points (M, 3) float32, colours (M, 3) uint8 or None), M = height * width.

    Fields are read by name and offset, so any point_step, row_step padding and byte order work; x, y, z
    may be FLOAT32 or FLOAT64; colours come from a packed ``rgb`` or ``rgba`` field (FLOAT32 or UINT32).
    """
    by_name = {f.name: f for f in msg.fields}
    missing = [n for n in "xyz" if n not in by_name]
    if missing:
        raise ConversionError(f"PointCloud2 lacks field(s) {missing}; has {sorted(by_name)}")
    color = next((by_name[n] for n in ("rgb", "rgba") if n in by_name), None)
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in [by_name["x"], by_name["y"], by_name["z"]] + ([color] if color is not None else []):
        kind = _FIELD_TYPES.get(f.datatype)
        if f.name in ("x", "y", "z") and kind not in ("f4", "f8"):
            raise ConversionError(f"PointCloud2 field {f.name!r} has datatype {f.datatype}, expected a float")
        if f.name not in ("x", "y", "z") and kind not in ("f4", "u4", "i4"):
            raise ConversionError(f"PointCloud2 field {f.name!r} has datatype {f.datatype}, expected 4 bytes")
        if f.name not in ("x", "y", "z"):
            kind = "u4"  # the colour's bit pattern, whatever the declared type
        names.append(f.name)
        formats.append(order + kind)
        offsets.append(int(f.offset))
    h, w, step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    if max(o + np.dtype(k).itemsize for o, k in zip(offsets, formats)) > step:
        raise ConversionError(f"PointCloud2 fields {names} at offsets {offsets} overrun point_step {step}")
    if h * w and row_step < w * step:
        raise ConversionError(f"PointCloud2 row_step {row_step} < width {w} * point_step {step}")
    n = len(msg.data)
    if h * w and n < row_step * (h - 1) + w * step:
        raise ConversionError(f"PointCloud2 {w}x{h}: data has {n} bytes, row_step {row_step}, "
                              f"point_step {step}")
    if h * w == 0:
        return np.zeros((0, 3), np.float32), None if color is None else np.zeros((0, 3), np.uint8)
    buf = np.frombuffer(msg.data, np.uint8)
    cloud = np.ndarray((h, w), dtype=dtype, buffer=buf, strides=(row_step, step))
    points = np.empty((h * w, 3), dtype=np.float32)
    for i, name in enumerate("xyz"):
        points[:, i] = cloud[name].ravel()
    if color is None:
        return points, None
    packed = cloud[color.name].ravel().astype(np.uint32)
    rgb = np.stack([(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF], axis=1).astype(np.uint8)
    return points, rgb


# ------------------------------------------------------------------------------------------- transforms

def _q_msg(R: np.ndarray) -> Quaternion:
    x, y, z, w = (float(v) for v in quaternion_from_R(R))
    return Quaternion(x=x, y=y, z=z, w=w)


def _check_T44(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ConversionError(f"T must be (4, 4), got {T.shape}")
    return T


def _T(q: Quaternion, t: tuple[float, float, float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R_from_quaternion([q.x, q.y, q.z, q.w])
    T[:3, 3] = t
    return T


def T_to_transform(T: np.ndarray) -> Transform:
    """4x4 rigid transform -> geometry_msgs/Transform (rotation via the nearest proper rotation)."""
    T = _check_T44(T)
    x, y, z = (float(v) for v in T[:3, 3])
    return Transform(translation=Vector3(x=x, y=y, z=z), rotation=_q_msg(T[:3, :3]))


def T_to_pose(T: np.ndarray) -> Pose:
    """4x4 rigid transform -> geometry_msgs/Pose."""
    T = _check_T44(T)
    x, y, z = (float(v) for v in T[:3, 3])
    return Pose(position=Point(x=x, y=y, z=z), orientation=_q_msg(T[:3, :3]))


def transform_to_T(msg: Transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 float64 (the quaternion is normalised first)."""
    t = msg.translation
    return _T(msg.rotation, (t.x, t.y, t.z))


def pose_to_T(msg: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4 float64 (the quaternion is normalised first)."""
    p = msg.position
    return _T(msg.orientation, (p.x, p.y, p.z))


def transform_stamped(T_parent_child: np.ndarray, parent_frame: str, child_frame: str,
                      stamp: Time | int) -> TransformStamped:
    """TransformStamped placing ``child_frame`` in ``parent_frame``; stamp as Time or integer nanoseconds."""
    if not isinstance(stamp, Time):
        stamp = ns_to_stamp(stamp)
    return TransformStamped(header=Header(stamp=stamp, frame_id=parent_frame), child_frame_id=child_frame,
                            transform=T_to_transform(T_parent_child))


def tf_message(transforms: list[TransformStamped]) -> TFMessage:
    """Wrap transforms in a tf2_msgs/TFMessage (for /tf or /tf_static)."""
    return TFMessage(transforms=list(transforms))
