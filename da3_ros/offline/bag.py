"""``da3-ros bag IN.mcap --out OUT.mcap``: a recorded ROS 2 bag in, a bag of the node's outputs out.

Reads the cameras' images (raw, ``sensor_msgs/CompressedImage``, or H.264 / H.265 video packets decoded in bag
order: ``da3_ros.offline.bag_video``), camera_info, /tf_static and the range topics (``metric.range_topics``, fitted
as the node fits them) in file order, synchronises the images with
the node's ``TimeSynchronizer`` on their header stamps, and runs EVERY set
(not only the newest, as the live node must) through the node's own core (``da3_ros.ros.pipeline``). Outputs are
the node's messages, serialised with rclpy and written with their ``ros2msg`` schemas: no DDS involved.
The output is sealed (summary, index) on every exit: end of input, a truncated input, an error, Ctrl-C.
"""
from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from da3_ros.ros import conversions as conv
from da3_ros.ros import emit
from da3_ros.ros.cdr_padding import serialize_message  # rclpy's bytes, padding zero: reproducible files
from da3_ros.ros.conversions.ranges import RANGE_TYPES
from da3_ros.ros.range_inputs import RangeTopics
from da3_ros.ros.ros_main import set_failure_text
from da3_ros.offline.bag_summary import BagSummary
from da3_ros.offline.bag_video import BagVideo
from da3_ros.offline.mcap_io import BagReader, BagReadError, BagTruncated, BagWriter
from da3_ros.offline.setup import OfflineSetup, TrajectoryFile, ros_type_name
from da3_ros.core.params import camera_param
from da3_ros.core.processor import Dropped, failure_text
from da3_ros.core.range_scale import RangeKind
from da3_ros.core.sync import SyncMode, TimeSynchronizer
from da3_ros.core.video_stream import VideoDrop
from da3_ros.ros.transport import COMPRESSED, FFMPEG, FOXGLOVE, RAW, input_transport

_LOG = logging.getLogger("da3_ros.offline.bag")
TRANSPORT_BY_TYPE = {ros_type_name(t.msg_type): t for t in (RAW, COMPRESSED, FFMPEG, FOXGLOVE)}  # by MCAP schema
INFO_TYPE, TF_TYPE = ros_type_name(CameraInfo), ros_type_name(TFMessage)


class BagInputError(ValueError):
    """The bag lacks what the parameters ask for (a camera's topic), or the options are inconsistent."""


@dataclass
class BagOptions:
    """Which sets to process: every n-th synchronised set, within [start, start + duration) of the bag."""

    every_n: int = 1
    start_s: float = 0.0  # from the bag's first message
    duration_s: float = 0.0  # 0 = to the end
    nav: bool = False  # also points_obstacles and scan (needs nav.target_frame on /tf_static)
    progress: bool = True
    trajectory: str = ""  # a TUM file of the odometry (temporal.keyframes > 0); "" = none


class _Progress:
    """One status line on stderr: sets done, rate, ETA (a new line per update when stderr is no terminal)."""

    def __init__(self, total_sets: float | None, reader: BagReader, enabled: bool):
        self.total, self.reader, self.enabled = total_sets, reader, enabled
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, done / self.total)
            what = f"{done}/{self.total:.0f} sets"
        else:
            frac = self.reader.bytes_read / max(1, self.reader.size)
            what = f"{done} sets"
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        line = f"[bag] [{bar}] {100 * frac:5.1f}% {what} {rate:.2f} sets/s ETA {eta:5.0f} s"
        sys.stderr.write(("\r" + line) if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def decode_image(schema_name: str, data) -> Image:
    """What the synchroniser held -> Image, as the node decodes it (da3_ros.ros.transport).

    A serialised raw Image, a CompressedImage decoded now, or a video camera's Image (decoded on arrival) as it is.
    """
    return TRANSPORT_BY_TYPE.get(schema_name, RAW).decode(data)


def _image_topics(setup: OfflineSetup, topics: dict[str, str]) -> list[tuple[str, str]]:
    """Per camera, (topic, type) of its images in the bag.

    The first of ``<topic>``, ``<topic>/compressed``, ``<topic>/ffmpeg``, ``<topic>/foxglove`` that holds a camera
    message (Image, CompressedImage, FFMPEGPacket, CompressedVideo), the topic of the camera's
    ``cameras.<name>.transport`` (the one the node subscribes) first.
    """
    out, missing = [], []
    for c in setup.cameras:
        image_topic, _ = setup.topics(c)
        first = input_transport(setup.param(camera_param(c, "transport")))
        candidates = [t.topic(image_topic) for t in (first, RAW, COMPRESSED, FFMPEG, FOXGLOVE)]
        for t in candidates:
            if topics.get(t) in TRANSPORT_BY_TYPE:
                out.append((t, topics[t]))
                break
        else:
            missing.append((c, image_topic, topics.get(image_topic)))
    if missing:
        found = sorted(t for t, ty in topics.items() if ty in TRANSPORT_BY_TYPE)
        what = "; ".join(f"camera {c!r}: no Image or CompressedImage on {t} or {t}/compressed, no FFMPEGPacket on "
                         f"{t}/ffmpeg, no CompressedVideo on {t}/foxglove"
                         + (f" ({t} holds {ty})" if ty else "") for c, t, ty in missing)
        raise BagInputError(f"{what}. Image topics in the bag: {found or 'none'}. Set camera_names and "
                            "cameras.<name>.image_topic in the parameter file")
    return out


class _Stop:
    """Ctrl-C (SIGINT/SIGTERM) asks to stop after the current set; a second one aborts at once."""

    def __init__(self):
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_Stop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write("\n[bag] stopping after the current set (Ctrl-C again to abort)\n")

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _write_set(writer: BagWriter, setup: OfflineSetup, out, log_time_ns: int, nav: bool) -> list[emit.Withheld]:
    """Write every output of one processed set as the node emits it (da3_ros.ros.emit); return what it withheld.

    Topic names are the node's, absolute (the node runs at /).
    """
    keys = emit.per_camera_keys(setup.param("depth.publish_mm"), setup.rig.engine.variant.has_sky)
    items = list(emit.set_messages(out, keys, lambda topic: True))
    if nav:
        items += emit.nav_messages(out, lambda topic: True)
    for item in items:
        if isinstance(item, emit.Message):
            writer.write("/" + item.topic.lstrip("/"), ros_type_name(type(item.msg)), serialize_message(item.msg),
                         log_time_ns)
    return [item for item in items if isinstance(item, emit.Withheld)]


def run_bag(in_path: str | Path, out_path: str | Path, values: dict, options: BagOptions) -> BagSummary:
    """Process a bag; the output is a valid MCAP whatever happens (BagReadError for an unreadable input)."""
    if options.every_n < 1:
        raise BagInputError(f"--every-n must be >= 1, got {options.every_n}")
    if options.start_s < 0 or options.duration_s < 0:
        raise BagInputError(f"--start and --duration must be >= 0, got {options.start_s}, {options.duration_s}")
    return _BagRun(BagReader(in_path), OfflineSetup(values, _LOG), options).run(out_path)


class _BagRun:
    """One pass over an input bag: its topics matched to the cameras, the synchroniser, the summary."""

    def __init__(self, reader: BagReader, setup: OfflineSetup, options: BagOptions):
        self.reader, self.setup, self.options = reader, setup, options
        self.info = reader.info()
        cams = setup.cameras
        self.image_topics = _image_topics(setup, self.info.topics)
        self.info_topics = [setup.topics(c)[1] for c in cams]
        for c, t in zip(cams, self.info_topics):
            if t not in self.info.topics:
                _LOG.warning("camera %r: no camera_info on %s; the model estimates its intrinsics", c, t)
        self.by_topic = {t: i for i, (t, _) in enumerate(self.image_topics)}
        # video: one decoder per camera, fed every packet in bag order (da3_ros.offline.bag_video)
        self.videos = [BagVideo(TRANSPORT_BY_TYPE[ty]) if TRANSPORT_BY_TYPE[ty].video else None
                       for _, ty in self.image_topics]
        self.info_index = {t: i for i, t in enumerate(self.info_topics)}
        self.infos: list[CameraInfo | None] = [None] * len(cams)
        self.summary = BagSummary(list(cams))
        self.bag_start_ns = self.info.start_ns
        p = setup.param
        self.sync = TimeSynchronizer(len(cams), SyncMode(p("sync.mode")), int(p("sync.slop_s") * 1e9),
                                     p("sync.queue_size"))
        cfg = setup.config  # metric.range_topics: the node's own picking and conversion (da3_ros.ros.range_inputs)
        self.ranges = RangeTopics(cfg.range_sources, cfg.range_fit) if cfg.range_sources else None
        # recorded names are absolute
        self.range_index = {"/" + s.topic.lstrip("/"): i for i, s in enumerate(cfg.range_sources)}
        self.range_info_index = {"/" + s.info_topic.lstrip("/"): i for i, s in enumerate(cfg.range_sources)
                                 if s.kind is RangeKind.DEPTH}
        for topic in self.range_index:
            if topic not in self.info.topics:
                _LOG.warning("range topic %s is not in the bag: no set gets a range scale from it", topic)

    def expected_sets(self) -> float | None:
        """How many sets the run will process, for the progress line (None when the bag does not say)."""
        counts = [self.info.message_counts.get(t) for t, _ in self.image_topics]
        if not all(counts):
            return None
        total = min(c for c in counts if c) / self.options.every_n
        o, info = self.options, self.info
        if info.start_ns is not None and info.end_ns and (o.start_s or o.duration_s):
            span_s = max(1e-9, (info.end_ns - info.start_ns) / 1e9)
            window = min(span_s - o.start_s, o.duration_s or span_s)
            total *= max(0.0, window) / span_s
        return total

    def run(self, out_path: str | Path) -> BagSummary:
        """Read every message, process the sets, write the output; the output is sealed whatever happens."""
        _LOG.info("cameras %s from %s; loading the model", self.setup.cameras, [t for t, _ in self.image_topics])
        self.trajectory = TrajectoryFile(self.options.trajectory, self.setup.config) if self.options.trajectory \
            else None  # before the model loads: a --trajectory without a window is refused at once
        self.setup.load()
        engine = self.setup.rig.engine if self.setup.rig is not None else None
        if engine is not None:  # what it runs on, as the node's start-up line says it
            _LOG.info("model %s on %s", engine.label, engine.describe())
        self.progress = progress = _Progress(self.expected_sets(), self.reader, self.options.progress)
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        writer = BagWriter(out_path)
        t_start = time.perf_counter()
        try:
            with _Stop() as stop:
                for m in self.reader.messages():
                    if stop.requested or not self._on_message(m, writer):
                        break
                self.summary.interrupted = stop.requested
        except BagTruncated as exc:
            self.summary.truncated = str(exc)
            _LOG.error("%s", exc)
        finally:
            writer.close()
            progress.close()
            if self.trajectory is not None:
                self.trajectory.close()
                self.summary.trajectory_poses = self.trajectory.poses
            self.summary.messages_written = writer.messages_written
            self.summary.frames_dropped_by_sync = self.sync.stats.frames_dropped
            self.summary.wall_s = time.perf_counter() - t_start
        return self.summary

    def _on_message(self, m, writer: BagWriter) -> bool:
        """Take one message of the input; False once the time window is over."""
        if self.bag_start_ns is None:
            self.bag_start_ns = m.log_time_ns
        if m.topic == "/tf_static" and m.schema_name == TF_TYPE:
            for t in deserialize_message(m.data, TFMessage).transforms:
                self.setup.static_tf.add(t.header.frame_id, t.child_frame_id, conv.transform_to_T(t.transform))
            writer.write(m.topic, m.schema_name, m.data, m.log_time_ns, schema=m.schema)
        elif m.topic in self.info_index and m.schema_name == INFO_TYPE:
            self.infos[self.info_index[m.topic]] = deserialize_message(m.data, CameraInfo)
        elif m.topic in self.by_topic and m.schema_name == self.image_topics[self.by_topic[m.topic]][1]:
            return self._on_image(m, writer)
        elif self.ranges is not None and m.topic == "/tf" and m.schema_name == TF_TYPE:  # a moving sensor's chain
            for t in deserialize_message(m.data, TFMessage).transforms:
                if t.header.frame_id and t.child_frame_id and t.header.frame_id != t.child_frame_id:
                    self.setup.static_tf.add_timed(t.header.frame_id, t.child_frame_id,
                                                   conv.transform_to_T(t.transform), conv.stamp_to_ns(t.header.stamp))
        elif self.ranges is not None and m.topic in self.range_index:
            i = self.range_index[m.topic]
            self.ranges.add(i, deserialize_message(m.data, RANGE_TYPES[self.ranges.sources[i].kind]))
        elif self.ranges is not None and m.topic in self.range_info_index and m.schema_name == INFO_TYPE:
            self.ranges.add_info(self.range_info_index[m.topic], deserialize_message(m.data, CameraInfo))
        return True

    def _on_image(self, m, writer: BagWriter) -> bool:
        o, summary = self.options, self.summary
        t_s = (m.log_time_ns - self.bag_start_ns) / 1e9
        if o.duration_s and t_s >= o.start_s + o.duration_s:
            return False
        i = self.by_topic[m.topic]
        summary.frames_in[self.setup.cameras[i]] += 1
        if t_s < o.start_s:
            summary.frames_outside_window += 1
            if self.videos[i] is not None:
                self.videos[i].hold(m.data)  # the GOP the window starts in is decoded from its keyframe
            return True
        try:
            frame = self._frame(i, m.data)
        except conv.ConversionError as exc:
            summary.drop("bad_input", f"{self.setup.cameras[i]}: {exc}")
            return True
        if frame is None or not self.sync.add(i, frame[0], (m.schema_name, frame[1]), m.log_time_ns):
            return True
        frameset = self.sync.take()
        summary.sets_formed += 1
        if (summary.sets_formed - 1) % o.every_n:
            summary.skipped_every_n += 1
            ref_stamp_ns = frameset.stamps_ns[self.setup.ref]
            if ref_stamp_ns is not None:  # skipped, not silent: no gap for the temporal window
                self.setup.frames.skipped(ref_stamp_ns)
            return True
        try:
            out = _process(frameset, self.setup, self.infos, self.info_topics, self.info.topics, writer, summary, o,
                           self.ranges)
            if out is not None:
                self._record_temporal(out)
        except Exception as exc:  # as the node: one set's failure is counted, the run goes on
            summary.drop("error", failure_text(exc), log=set_failure_text(exc))  # a bug's traceback logged
        self.progress.update(summary.sets_processed)
        return True

    def _frame(self, i: int, data: bytes) -> tuple[int, object] | None:
        """(stamp, what the synchroniser holds) of camera ``i``'s message; None: a video packet gave no frame.

        Raw and compressed: the bytes (only the stamp read; decoded if their set is processed). Video: the packet
        decoded now, in bag order (its drop counted by reason, as the node's ``video_dropped.<reason>``).
        """
        video = self.videos[i]
        if video is None:
            return conv.stamp_ns_from_cdr(data), data
        t0 = time.perf_counter()
        out = video.feed(data)
        self.summary.stage("video decode", time.perf_counter() - t0)
        if isinstance(out, VideoDrop):
            self.summary.video_drop(out.value, self.setup.cameras[i])
        if not isinstance(out, Image):
            return None
        return conv.stamp_to_ns(out.header.stamp), out

    def _record_temporal(self, out) -> None:
        """The set's odometry into the trajectory file; a restart of the window chain counted and said."""
        if self.trajectory is not None:
            self.trajectory.record(out)
        step = out.result.temporal
        if step is not None and step.chain.restart is not None:
            self.summary.temporal_restarts[step.chain.restart.value] += 1
            _LOG.info("temporal chain restarted (%s): %s", step.chain.restart.value, step.chain.restart_detail)


def _process(frameset, setup: OfflineSetup, infos, info_topics, bag_topics, writer: BagWriter,
             summary: BagSummary, options: BagOptions, ranges: RangeTopics | None = None):
    """One set: decoded, processed, written; its SetResult (None: dropped)."""
    t0 = time.perf_counter()
    try:
        images = [decode_image(kind, data) for kind, data in frameset.items]
    except conv.ConversionError as exc:
        summary.drop("bad_input", str(exc))
        return None
    t_decode = time.perf_counter() - t0
    pending = [info is None and topic in bag_topics for info, topic in zip(infos, info_topics)]
    ref_stamp_ns = frameset.stamps_ns[setup.ref]
    picked = None if ranges is None else ranges.for_set(  # the messages read so far, as the node has received
        frameset.newest_stamp_ns if ref_stamp_ns is None else ref_stamp_ns)
    done = setup.core.process(images, list(infos), pending, wants_nav=options.nav, ranges=picked)
    if isinstance(done, Dropped):
        summary.drop(done.reason.value, done.detail)
        return None
    if done.outputs.result.range_fit is not None:
        summary.range_fit(done.outputs.result.range_fit)
    t1 = time.perf_counter()
    withheld = _write_set(writer, setup, done.outputs, frameset.stamps_ns[setup.ref], options.nav)
    for counter, text in emit.reasons(withheld).items():  # as the node: counted once per set and reason
        summary.withhold(counter, text)
    summary.sets_processed += 1
    summary.stage("decode", t_decode + done.timing_s.get("convert", 0.0))
    for k in ("preprocess", "forward", "postprocess"):
        if k in done.timing_s:
            summary.stage(k, done.timing_s[k])
    summary.stage("write", time.perf_counter() - t1)
    return done.outputs


def cmd_bag(args) -> int:
    """``da3-ros bag``: see the module docstring; exit 0 done, 1 truncated input, 130 interrupted."""
    from da3_ros.offline.setup import ParamFileError, load_values

    try:
        values = load_values(args.params_file, args.param, _LOG)
        for name in ("model", "backend"):
            if getattr(args, name):
                values[name] = getattr(args, name)
        options = BagOptions(args.every_n, args.start, args.duration, args.nav, not args.no_progress,
                             args.trajectory or "")
        summary = run_bag(args.input, args.out, values, options)
    except (BagReadError, BagInputError, ParamFileError, ValueError) as exc:  # ValueError: the node's checks
        raise SystemExit(f"da3-ros bag: {exc}") from None
    except KeyboardInterrupt:
        print(f"[bag] aborted (second Ctrl-C); {args.out} is sealed with the sets finished before it")
        return 130
    print("[bag] summary")
    for line in summary.lines():
        print(f"  {line}")
    print(f"[bag] wrote {args.out}")
    if summary.interrupted:
        return 130
    return 1 if summary.truncated else 0
