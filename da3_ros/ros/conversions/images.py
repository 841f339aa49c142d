"""sensor_msgs/Image and CompressedImage <-> numpy: rgb, depth (32FC1, 16UC1 mm), confidence, masks."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from da3_ros.core.geometry import valid_depth
from da3_ros.ros.conversions.stamps import ConversionError


MAX_16UC1_M = 65.535  # the largest depth a 16UC1 millimetre image can hold

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


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Depth (H, W) in metres -> uint16 millimetres (REP 118: 0 = no reading).

    NaN, +-Inf, non-positive depths and depths beyond 65.535 m (which would wrap) become 0; the rest is
    rounded to the nearest millimetre (a depth below 0.5 mm thus also reads 0).
    """
    depth_m = np.asarray(depth_m)
    with np.errstate(invalid="ignore", over="ignore"):
        mm = np.rint(depth_m.astype(np.float64) * 1000.0)
        ok = valid_depth(depth_m) & (mm <= 65535.0)
    return np.where(ok, mm, 0.0).astype(np.uint16)


def depth_to_image_16uc1_mm(depth_m: np.ndarray, header: Header) -> Image:
    """Depth (H, W) in metres -> 16UC1 Image in millimetres, as ``depth_to_mm``."""
    return array_to_image(depth_to_mm(depth_m), header, "16UC1")
