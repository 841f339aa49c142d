"""Depth -> sensor_msgs/CompressedImage in image_transport's ``compressedDepth`` format (PNG flavour).

The wire format, as compressed_depth_image_transport (ros-perception/image_transport_plugins, codec.cpp and
compression_common.h; the same on Humble and later) writes and reads it:

- ``format``: ``"<encoding>; compressedDepth png"`` (Humble's decoder reads the encoding before ``;`` and always
  decodes PNG; later ones also accept ``rvl``, not written here).
- ``data``: a 12-byte ``ConfigHeader`` in the host's (little-endian) byte order: int32 ``format`` (0 = INV_DEPTH)
  and float32 ``depthParam[2]`` = (A, B), then a 16-bit single-channel PNG.
- 32FC1: the PNG holds quantised inverse depth ``q = A / d + B``; the decoder returns ``A / (q - B)`` for q > 0
  and NaN for q = 0. The plugin's own encoder takes ``A = Z0 (Z0 + 1)`` and ``B = 1 - A / depth_max`` from its
  parameters ``depth_quantization`` (Z0, default 100) and ``depth_max`` (default 10 m, at most 100 m), and
  writes 0 for every depth that is not below ``depth_max`` (NaN, +Inf, far). A, B travel in the header, so any
  decoder reads ours.
- 16UC1: the PNG holds the millimetres as they are (A, B unused; we write zeros).
"""
from __future__ import annotations

import struct

import numpy as np
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from da3_ros.ros.conversions.stamps import ConversionError

INV_DEPTH = 0  # compressionFormat of compression_common.h
CONFIG_HEADER = struct.Struct("<iff")  # ConfigHeader: compressionFormat (int32), float depthParam[2]
DEPTH_QUANTIZATION = 100.0  # the plugin's default Z0
DEPTH_MAX_M = 100.0  # the plugin's largest depth_max (its default 10 m would drop most outdoor depth)
QUANT_A = np.float32(DEPTH_QUANTIZATION * (DEPTH_QUANTIZATION + 1.0))  # 10100, exact in float32
QUANT_B = np.float32(1.0 - float(QUANT_A) / DEPTH_MAX_M)  # -100, exact in float32
MIN_DEPTH_M = float(QUANT_A) / (65535.0 - float(QUANT_B))  # ~0.154 m: q = 65535; nearer depths are clipped to it
PNG_LEVEL = 3  # the plugin's default png_level


def quantisation_error_m(depth_m: float) -> float:
    """The largest error of a decoded 32FC1 depth in [MIN_DEPTH_M, DEPTH_MAX_M): half a step of q, d^2/(2A - d)."""
    a = float(QUANT_A)
    return depth_m * depth_m / (2.0 * a - depth_m)


def _png16(pixels: np.ndarray) -> bytes:
    import cv2  # here, not at import: only a compressedDepth subscriber pays for OpenCV

    ok, png = cv2.imencode(".png", np.ascontiguousarray(pixels, dtype=np.uint16),
                           [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    if not ok:
        raise ConversionError(f"OpenCV could not encode a {pixels.shape[1]}x{pixels.shape[0]} 16-bit PNG")
    return png.tobytes()


def inverse_depth_q(depth: np.ndarray) -> np.ndarray:
    """(H, W) depth -> the uint16 q the 32FC1 PNG holds: round(A / d + B), 0 where there is no depth to send.

    0 (decoded as NaN) for NaN, +-Inf (sky), d <= 0 and d >= DEPTH_MAX_M, as the plugin (whose own encoder
    leaves d <= 0 and d < MIN_DEPTH_M undefined: a float out of uint16's range); nearer than MIN_DEPTH_M is
    clipped to q = 65535. Rounded to the nearest q (the plugin truncates: twice the error).
    """
    d = np.asarray(depth, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.rint(float(QUANT_A) / d + float(QUANT_B))
        ok = (d > 0.0) & (d < DEPTH_MAX_M)  # False for NaN and +-Inf
    return np.where(ok, np.clip(q, 1.0, 65535.0), 0.0).astype(np.uint16)


def depth_to_compressed_depth(depth: np.ndarray, header: Header) -> CompressedImage:
    """Depth (H, W) as 32FC1 -> ``compressedDepth`` ("32FC1; compressedDepth png"), quantised inverse depth.

    Decodes (the plugin's subscriber, ``image_transport republish``, RViz) to 32FC1 within
    ``quantisation_error_m(d)`` for MIN_DEPTH_M <= d < DEPTH_MAX_M; NaN for invalid, sky (+Inf) and far depth.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.size == 0:
        raise ConversionError(f"compressedDepth needs a non-empty (H, W) depth array, got shape {depth.shape}")
    data = CONFIG_HEADER.pack(INV_DEPTH, float(QUANT_A), float(QUANT_B)) + _png16(inverse_depth_q(depth))
    return CompressedImage(header=header, format="32FC1; compressedDepth png", data=data)


def mm_to_compressed_depth(depth_mm: np.ndarray, header: Header) -> CompressedImage:
    """16UC1 millimetres (H, W) uint16 -> ``compressedDepth`` ("16UC1; compressedDepth png"), lossless."""
    depth_mm = np.asarray(depth_mm)
    if depth_mm.ndim != 2 or depth_mm.size == 0 or depth_mm.dtype != np.uint16:
        raise ConversionError(f"compressedDepth 16UC1 needs a non-empty (H, W) uint16 array, got shape "
                              f"{depth_mm.shape} dtype {depth_mm.dtype}")
    data = CONFIG_HEADER.pack(INV_DEPTH, 0.0, 0.0) + _png16(depth_mm)
    return CompressedImage(header=header, format="16UC1; compressedDepth png", data=data)
