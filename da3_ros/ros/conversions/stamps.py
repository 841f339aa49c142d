"""Stamps: builtin_interfaces/Time <-> integer nanoseconds, and the stamp of a raw CDR image read or written."""
from __future__ import annotations

from builtin_interfaces.msg import Time

from da3_ros.core.stamps import NS_PER_S


class ConversionError(ValueError):
    """A message cannot be converted: unsupported encoding or inconsistent sizes."""


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
    if nanosec >= NS_PER_S:
        raise ConversionError(f"stamp nanosec {nanosec} out of range in a serialized message")
    return sec * NS_PER_S + nanosec


def stamp_cdr(data: bytes, ns: int) -> bytes:
    """A copy of serialized ``data`` (starting with a std_msgs/Header) with its stamp set to ``ns``.

    The inverse of ``stamp_ns_from_cdr``: 8 bytes change, the megabytes of pixels are copied once.
    """
    stamp_ns_from_cdr(data)  # the same checks: a CDR message with a header
    order = "little" if data[1] == 1 else "big"
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return b"".join((data[:4], sec.to_bytes(4, order, signed=True), nanosec.to_bytes(4, order), data[12:]))


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (nanosec always in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)
