"""Reproducible CDR: rclpy's serialised bytes with every alignment padding byte set to zero.

rclpy's ``serialize_message`` (Fast CDR under rmw_fastrtps) aligns by moving its write position, never writing
the skipped bytes, into a buffer from ``realloc``: the padding carries whatever that memory held before, so the
same message serialises to different bytes from run to run (issue 23 item 18). ``serialize_message`` here walks
the serialised bytes with the message's own type description (``SLOT_TYPES``: plain CDR, little or big endian,
alignment relative to the end of the 4-byte encapsulation header, 8 at most) and zeroes exactly the gaps, and
the tail past the last value (rmw_fastrtps sizes the buffer by its upper estimate, which reserves alignment for
empty sequences too, and leaves the unused end unwritten); every value byte is rclpy's, the length too. A walk
that runs past the end of the bytes raises (never a silently wrong file).
"""
from __future__ import annotations

import importlib
import struct
from functools import cache
from typing import Any

from rclpy.serialization import serialize_message as _rclpy_serialize
from rosidl_parser.definition import (AbstractSequence, AbstractString, AbstractWString, Array, BasicType,
                                      NamespacedType)

HEADER = 4  # encapsulation header (representation id + options); CDR alignment counts from its end
PRIMITIVE_SIZE = {"boolean": 1, "octet": 1, "char": 1, "uint8": 1, "int8": 1, "uint16": 2, "int16": 2,
                  "wchar": 2, "uint32": 4, "int32": 4, "float": 4, "uint64": 8, "int64": 8, "double": 8,
                  "long double": 8}


class CdrLayoutError(ValueError):
    """The serialised bytes do not follow the message type's CDR layout (a walk past or short of the end)."""


def serialize_message(msg: Any) -> bytes:
    """``msg`` as CDR bytes like rclpy's, with every alignment padding byte zero: same message, same bytes."""
    return zero_padding(type(msg), _rclpy_serialize(msg))


def zero_padding(msg_type: type, data: bytes) -> bytes:
    """``data`` (CDR of ``msg_type`` with its encapsulation header) with its alignment padding set to zero.

    The bytes past the last value (rmw's estimated length exceeds the written one) are zeroed too. Raises
    CdrLayoutError when the walk runs past the end of ``data``.
    """
    buf = bytearray(data)
    if len(buf) < HEADER:
        raise CdrLayoutError(f"{len(buf)} bytes are no CDR message (the header alone is {HEADER})")
    walker = _Walker(buf, "<" if buf[1] & 1 else ">")
    end = walker.struct(msg_type, 0)
    if HEADER + end > len(buf):
        raise CdrLayoutError(f"{msg_type.__name__}: the CDR walk ended at byte {end + HEADER} of {len(buf)}")
    buf[HEADER + end:] = bytes(len(buf) - HEADER - end)  # written by nobody: past the last value
    return bytes(buf)


@cache
def _message_class(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)


class _Walker:
    """Walks CDR bytes field by field (offsets relative to the end of the header), zeroing each alignment gap."""

    def __init__(self, buf: bytearray, endian: str):
        self.buf = buf
        self.u32 = struct.Struct(endian + "I")

    def align(self, off: int, size: int) -> int:
        pad = -off % min(size, 8)
        if HEADER + off + pad > len(self.buf):
            raise CdrLayoutError(f"alignment at byte {HEADER + off} is past the end ({len(self.buf)} bytes)")
        self.buf[HEADER + off:HEADER + off + pad] = bytes(pad)
        return off + pad

    def count(self, off: int) -> tuple[int, int]:
        off = self.align(off, 4)
        if HEADER + off + 4 > len(self.buf):
            raise CdrLayoutError(f"a length at byte {HEADER + off} is past the end ({len(self.buf)} bytes)")
        return self.u32.unpack_from(self.buf, HEADER + off)[0], off + 4

    def struct(self, msg_type: type, off: int) -> int:
        slot_types = msg_type.SLOT_TYPES  # type: ignore[attr-defined]
        if not slot_types:  # an empty message carries one uint8 (structure_needs_at_least_one_member)
            return off + 1
        for t in slot_types:
            off = self.field(t, off)
        return off

    def field(self, t: Any, off: int) -> int:
        if isinstance(t, BasicType):
            size = PRIMITIVE_SIZE[t.typename]
            return self.align(off, size) + size
        if isinstance(t, AbstractWString):
            raise CdrLayoutError("wstring fields are not supported by the padding walk")
        if isinstance(t, AbstractString):
            n, off = self.count(off)
            return off + n
        if isinstance(t, NamespacedType):
            return self.struct(_message_class(".".join(t.namespaces), t.name), off)
        if isinstance(t, (Array, AbstractSequence)):
            if isinstance(t, Array):
                n = t.size
            else:
                n, off = self.count(off)
            if isinstance(t.value_type, BasicType):  # contiguous, aligned once (when there is an element)
                size = PRIMITIVE_SIZE[t.value_type.typename]
                return self.align(off, size) + n * size if n else off
            for _ in range(n):
                off = self.field(t.value_type, off)
            return off
        raise CdrLayoutError(f"unsupported field type {t!r}")
