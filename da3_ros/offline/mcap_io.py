"""ROS 2 bags as MCAP files, without a ROS install: message definitions, a robust reader, a safe writer.

ROS-free: messages are CDR bytes here. Schemas are written the way rosbag2 writes them (encoding ``ros2msg``:
the type's .msg text, then every dependency after a line of 80 ``=`` and ``MSG: pkg/msg/Type``), read from the
installed interface packages (``<prefix>/share/<pkg>/msg/<Type>.msg``), so Foxglove, ``ros2 bag`` and
``mcap-ros2-support`` decode every topic, ours included. The reader streams the file record by record, so a
truncated bag yields every message before the damage and then raises ``BagTruncated``.
"""
from __future__ import annotations

import os
import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap.writer import CompressionType, Writer

MSG_DELIMITER = "=" * 80
PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
              "int64", "uint64", "string", "wstring"}
MCAP_MAGIC = b"\x89MCAP0\r\n"


class MessageDefinitionError(LookupError):
    """A message type whose .msg file is not installed under any prefix searched."""


class BagReadError(RuntimeError):
    """The input is not a readable MCAP file."""


class BagTruncated(BagReadError):
    """The input ends (or is damaged) in the middle: every message before ``offset`` was read."""

    def __init__(self, path: str, offset: int, messages: int, cause: Exception):
        self.offset, self.messages = offset, messages
        super().__init__(f"{path} is truncated or damaged at byte {offset} ({type(cause).__name__}: {cause}); "
                         f"{messages} messages before it were read")


# ------------------------------------------------------------------------------------ message definitions

def share_dirs() -> list[Path]:
    """Where interface packages are installed: AMENT_PREFIX_PATH, then the active venv / interpreter prefix."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes += [os.environ.get("VIRTUAL_ENV", ""), sys.prefix]
    seen: list[Path] = []
    for p in prefixes:
        share = Path(p) / "share"
        if p and share.is_dir() and share not in seen:
            seen.append(share)
    return seen


def _split_type(type_name: str) -> tuple[str, str]:
    parts = type_name.split("/")
    if len(parts) == 3 and parts[1] == "msg":
        return parts[0], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise MessageDefinitionError(f"message type {type_name!r} is not pkg/msg/Type or pkg/Type")


def _msg_text(pkg: str, name: str, shares: list[Path]) -> str:
    for share in shares:
        path = share / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            return path.read_text()
    raise MessageDefinitionError(f"{pkg}/msg/{name}.msg not found under {[str(s) for s in shares]}: install the "
                                 f"package that defines it or add its prefix to AMENT_PREFIX_PATH")


def field_types(text: str, pkg: str) -> list[str]:
    """The non-primitive field types of a .msg text, as pkg/msg/Type, in order of appearance (constants skipped)."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        if len(tokens) < 2 or "=" in tokens[1]:
            continue  # a constant: NAME=value (always a primitive)
        base = re.sub(r"\[.*?\]$", "", tokens[0])
        base = re.sub(r"<=\d+$", "", base)
        if base in PRIMITIVES:
            continue
        dep_pkg, dep_name = _split_type(base) if "/" in base else (pkg, base)
        full = f"{dep_pkg}/msg/{dep_name}"
        if full not in out:
            out.append(full)
    return out


def message_definition(type_name: str, shares: list[Path] | None = None) -> str:
    """The complete ``ros2msg`` definition of ``type_name`` (pkg/msg/Type): its .msg and all dependencies."""
    shares = share_dirs() if shares is None else shares
    pkg, name = _split_type(type_name)
    root = _msg_text(pkg, name, shares)
    parts, done = [root.rstrip("\n")], {f"{pkg}/msg/{name}"}
    todo = field_types(root, pkg)
    while todo:
        dep = todo.pop(0)
        if dep in done:
            continue
        done.add(dep)
        dep_pkg, dep_name = _split_type(dep)
        text = _msg_text(dep_pkg, dep_name, shares)
        parts.append(f"{MSG_DELIMITER}\nMSG: {dep}\n{text.rstrip(chr(10))}")
        todo.extend(t for t in field_types(text, dep_pkg) if t not in done)
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class BagMessage:
    """One message of a bag: CDR bytes and where they belong."""

    topic: str
    schema_name: str  # e.g. sensor_msgs/msg/Image
    log_time_ns: int
    data: bytes
    schema: Schema | None = None


@dataclass
class BagInfo:
    """What the bag's summary says (None where it has none, e.g. truncated)."""

    topics: dict[str, str]  # topic -> message type
    message_counts: dict[str, int] = field(default_factory=dict)  # per topic; empty without statistics
    start_ns: int | None = None
    end_ns: int | None = None
    has_summary: bool = False


class BagReader:
    """Reads a ROS 2 MCAP bag in file order; a truncated or damaged tail ends the stream with BagTruncated."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            with open(self.path, "rb") as f:
                magic = f.read(len(MCAP_MAGIC))
        except OSError as exc:
            raise BagReadError(f"cannot open bag {self.path!r}: {exc.strerror}") from None
        if magic != MCAP_MAGIC:
            raise BagReadError(f"{self.path!r} is not an MCAP file (rosbag2's default storage since Iron); a "
                               "sqlite3 bag converts with `ros2 bag convert` (storage_id: mcap)")
        self.size = os.path.getsize(self.path)
        self.bytes_read = 0

    def info(self) -> BagInfo:
        """Topics and counts from the summary; without one (a truncated file), from a pass over the records."""
        try:
            with open(self.path, "rb") as f:
                summary = make_reader(f).get_summary()
        except (McapError, struct.error, ValueError, EOFError):
            summary = None
        if summary is not None and summary.channels:
            topics = {c.topic: summary.schemas[c.schema_id].name if c.schema_id in summary.schemas else ""
                      for c in summary.channels.values()}
            counts: dict[str, int] = {}
            start = end = None
            if summary.statistics is not None:
                st = summary.statistics
                for cid, n in st.channel_message_counts.items():
                    if cid in summary.channels:
                        counts[summary.channels[cid].topic] = counts.get(summary.channels[cid].topic, 0) + n
                start, end = st.message_start_time, st.message_end_time
            return BagInfo(topics, counts, start, end, has_summary=True)
        topics, counts = {}, {}
        try:
            for m in self.messages():
                topics[m.topic] = m.schema_name
                counts[m.topic] = counts.get(m.topic, 0) + 1
        except BagTruncated:
            pass
        return BagInfo(topics, counts)

    def messages(self) -> Iterator[BagMessage]:
        """Every message in file order; raises BagTruncated after the last readable one of a damaged file."""
        schemas: dict[int, Schema] = {}
        channels: dict[int, Channel] = {}
        count = 0
        with open(self.path, "rb") as f:
            reader = StreamReader(f, validate_crcs=False)
            stream = reader._stream  # its byte count: how far the records read so far reach
            records = reader.records
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    return
                except (McapError, struct.error, ValueError, EOFError, RuntimeError) as exc:
                    raise BagTruncated(self.path, stream.count, count, exc) from None
                except Exception as exc:  # zstd / lz4 errors on a cut chunk
                    raise BagTruncated(self.path, stream.count, count, exc) from None
                self.bytes_read = stream.count
                if isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    channels[record.id] = record
                elif isinstance(record, Message):
                    ch = channels.get(record.channel_id)
                    if ch is None or ch.message_encoding != MessageEncoding.CDR:
                        continue
                    schema = schemas.get(ch.schema_id)
                    count += 1
                    yield BagMessage(ch.topic, schema.name if schema else "", record.log_time, record.data, schema)


# ----------------------------------------------------------------------------------------------- writing

class BagWriter:
    """Writes CDR messages into a ROS 2 MCAP (profile ros2); ``finish`` (also on exit of ``with``) seals it.

    A finished file has its summary and index; ``close`` is idempotent, so call it from ``finally`` and
    signal handlers.
    """

    def __init__(self, path: str | Path, chunk_size: int = 4 * 1024 * 1024,
                 compression: CompressionType = CompressionType.ZSTD, shares: list[Path] | None = None):
        self.path = str(path)
        self._file: IO[bytes] = open(self.path, "wb")
        self._writer = Writer(self._file, chunk_size=chunk_size, compression=compression)
        self._writer.start(profile="ros2", library="da3_ros")
        self._shares = share_dirs() if shares is None else shares
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._sequence: dict[int, int] = {}
        self.messages_written = 0
        self.finished = False

    def _schema_id(self, type_name: str, definition: bytes | None = None,
                   encoding: str = SchemaEncoding.ROS2) -> int:
        if type_name not in self._schemas:
            data = definition if definition is not None else message_definition(type_name, self._shares).encode()
            self._schemas[type_name] = self._writer.register_schema(type_name, encoding, data)
        return self._schemas[type_name]

    def write(self, topic: str, type_name: str, data: bytes, log_time_ns: int, schema: Schema | None = None) -> None:
        """Append one CDR message on ``topic`` (registering its schema and channel on first use).

        ``schema``: copy a schema record from another bag as is (e.g. when passing /tf_static through).
        """
        if self.finished:
            raise RuntimeError(f"{self.path} is already finished")
        cid = self._channels.get(topic)
        if cid is None:
            sid = self._schema_id(type_name, schema.data if schema else None,
                                  schema.encoding if schema else SchemaEncoding.ROS2)
            cid = self._channels[topic] = self._writer.register_channel(topic, MessageEncoding.CDR, sid, {})
        seq = self._sequence.get(cid, 0)
        self._sequence[cid] = seq + 1
        self._writer.add_message(cid, log_time=int(log_time_ns), data=data, publish_time=int(log_time_ns),
                                 sequence=seq)
        self.messages_written += 1

    def close(self) -> None:
        """Write the summary and close the file (idempotent)."""
        if self.finished:
            return
        self.finished = True
        try:
            self._writer.finish()
        finally:
            self._file.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
