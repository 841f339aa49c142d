"""The feature matrix (issue 23): every behaviour-changing parameter meets every other, invariants on every set.

A table of the node's parameters and the values worth combining (``MATRIX``), or the reason a parameter is left
out (``EXCLUDED``): a parameter that ``core/params.py`` gains and this table neither covers nor excludes fails
``test_every_parameter_is_covered_or_excluded_with_a_reason``. A pairwise covering array of the table's values
(every pair of values of two parameters appears in some run) is driven through what the node runs: the real
synchroniser on an arrival clock, the transport's decoding of serialised frames, the per-set processor with the
real network (random weights, 56 px) and the one emitter, by seeded event scripts (every camera paused, the
reference silent, another camera silent, a burst right after a silence, a parameter set mid-run, deactivate /
activate, stamps backward, camera_info changed). Each emitted set is checked against the invariants the README
promises; each invariant has a self-test that injects its violation and sees it caught.
"""
from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import Header

from da3_ros.core.config import DepthConfig
from da3_ros.core.errors import ConfigError
from da3_ros.core.params import CAMERA_PARAMS, NODE_PARAMS
from da3_ros.core.rig_setup import build_rig
from da3_ros.core.static_tf import StaticTfBuffer
from da3_ros.core.sync import SyncMode, TimeSynchronizer
from da3_ros.core.temporal.keyframes import ResetReason
from da3_ros.engines import engine_from_config
from da3_ros.core.processor import Processed
from da3_ros.ros import conversions as conv
from da3_ros.ros import emit
from da3_ros.ros.diagnostics import COUNTERS
from da3_ros.ros.pipeline import SetProcessor
from da3_ros.ros.range_inputs import RangeTopics
from da3_ros.ros.transport import JPEG_FORMAT, input_transport
from conftest import module_dir

MS = 1_000_000
CAMERAS = ("left", "right")
FRAMES = {c: f"{c}_optical_frame" for c in CAMERAS}
METRIC_MODEL = "random:da3metric-large@0"
RANGE_SCALE = 3.0
# scale "range": the cameras look opposite ways on a robot (each one's returns behind the other), a lidar above
R_AHEAD, R_BEHIND = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]), np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]])

# --- the table ----------------------------------------------------------------------------------------------
# Parameter (or a named group of settings the harness turns into parameters) -> the values worth combining.
MATRIX: dict[str, tuple[Any, ...]] = {
    "backend": ("torch", "onnxruntime", "onnxruntime_int8", "openvino", "openvino_int8"),  # *_int8: precision int8;
    # openvino at precision auto (bf16 where the CPU has AVX512-BF16/AMX, gated, else fp32)
    "scale": ("none", "rig", "pair", "range"),  # metres from: nothing, T_ref_cam + camera_info, metric_model, a
    # LiDAR cloud (metric.range_topics) made from the previous set's depth x RANGE_SCALE, through /tf_static
    "temporal.keyframes": (0, 2),
    "tf.mode": ("estimated_children", "camera_frames", "off"),
    "tf.suffix": ("_da3", "_est"),
    "transport": ("raw", "compressed", "ffmpeg"),  # cameras.<name>.transport (ffmpeg: H.264, all keyframes;
    # foxglove shares its decoder; loss and recovery: test_video_input.py)
    "pose_conditioning": ("auto", "off"),
    "metric.every_n_sets": (1, 3),
    "nav": ("on", "off"),  # a points_obstacles / scan subscriber
    "depth.sky_as_inf": (True, False),
    "cloud.drop_sky": (True, False),
    "temporal.publish_relative_odometry": (False, True),
    "script": ("pause_all", "reference_silent", "other_silent", "burst_after_silence", "param_set", "lifecycle",
               "stamps_back", "K_changed"),
}
# Parameters the table covers through a group above (the harness sets them from the group's value).
COVERED_BY = {
    "precision": "backend", "metric_model": "scale", "cameras.<name>.T_ref_cam": "scale",
    "cameras.<name>.transport": "transport", "metric.range_topics": "scale (range)",
    "metric.range_slop_s": "scale (range; pause_all leaves the cloud out of the slop)",
    "sync.camera_timeout_s": "script (silences, bursts)",
    "fused_frame": "script (param_set)", "cloud.stride": "script (param_set)", "nav.target_frame": "nav",
}
# Parameters left out of the matrix, each with the reason (what tests them instead).
EXCLUDED = {
    "model": "the variant is fixed (da3-small, the only any-view model cheap enough at 56 px); variants: "
             "test_variants.py, test_parity.py",
    "device": "no GPU on the CI machine; device rules: test_engine_settings.py",
    "threads": "a performance knob, no behaviour (the runs use 1): test_engine_settings.py",
    "engine_cache_dir": "the harness shares one cache for the session; cache mechanics: test_cache.py",
    "triton.url": "a Triton server per run costs seconds; Triton x temporal/conditioning/silence: test_triton.py",
    "triton.model": "as triton.url", "triton.model_version": "as triton.url", "triton.timeout_s": "as triton.url",
    "triton.ssl": "as triton.url", "triton.root_certificates": "as triton.url", "triton.private_key": "as triton.url",
    "triton.certificate_chain": "as triton.url", "triton.headers": "as triton.url",
    "metric.filter": "smoothing of a scale already in the matrix (pair, rig); filter rules: test_metric.py",
    "metric.filter_window": "as metric.filter", "metric.max_rate_per_s": "as metric.filter",
    "metric.outlier_ratio": "as metric.filter", "metric.reset_after": "as metric.filter",
    "metric.range_max_m": "a filter on range returns: test_range_scale.py",
    "metric.range_min_points": "the fit's refusals: test_range_scale.py",
    "metric.range_max_residual": "as metric.range_min_points", "metric.range_min_confidence": "as metric.range_max_m",
    "process_res": "fixed at 56 px for speed; resolution rules: test_preprocess.py",
    "process_res_method": "preprocessing only: test_preprocess.py", "mixed_resolution": "as process_res_method",
    "camera_names": "the rig is two cameras; N cameras: test_node.py, test_seams.py",
    "sync.mode": "matching only: test_sync.py", "sync.slop_s": "as sync.mode", "sync.queue_size": "as sync.mode",
    "cloud.min_confidence": "a filter on cloud points: test_geometry.py", "cloud.min_depth": "as cloud.min_confidence",
    "cloud.max_depth": "as cloud.min_confidence", "cloud.confidence_field": "a cloud field: test_conversions.py",
    "nav.ground": "navigation maths: test_navigation.py", "nav.min_height_m": "as nav.ground",
    "nav.max_height_m": "as nav.ground", "nav.voxel_m": "as nav.ground", "nav.outlier_radius_m": "as nav.ground",
    "nav.outlier_min_neighbours": "as nav.ground", "nav.max_range_m": "as nav.ground",
    "scan.angle_min": "as nav.ground", "scan.angle_max": "as nav.ground", "scan.angle_increment": "as nav.ground",
    "scan.range_min": "as nav.ground", "scan.range_max": "as nav.ground", "scan.min_height_m": "as nav.ground",
    "scan.max_height_m": "as nav.ground",
    "depth.publish_mm": "an extra encoding of the same depth: test_conversions.py",
    "temporal.min_translation_rel": "the keyframe rule: test_temporal.py", "temporal.min_rotation_deg": "as above",
    "temporal.min_interval_s": "as above", "temporal.min_sharpness_ratio": "as above",
    "temporal.max_gap_s": "the gap rule: test_temporal.py, test_temporal_outputs.py",
    "temporal.alignment": "alignment maths: test_temporal.py",
    "temporal.publish_tf": "the odometry TF: test_temporal_window.py", "temporal.odom_frame": "as above",
    "temporal.child_frame": "as above",
    "tf.publish_alone": "which sets run for whom (a /tf listener alone), not what a set emits: "
                        "test_node.py::test_a_tf_listener_alone_runs_forwards_only_with_tf_publish_alone",
    "qos.input": "DDS wiring, not logic: test_node.py", "qos.output": "as qos.input", "qos.depth": "as qos.input",
    "diagnostics_period_s": "DDS wiring: test_diagnostics.py",
    "cameras.<name>.image_topic": "topic wiring: test_node.py",
    "cameras.<name>.camera_info_topic": "topic wiring: test_node.py (camera_info content changes: the K_changed "
                                        "script)",
    "reference_camera": "the first camera is the reference here (the reference_silent script silences it); "
                        "another reference: test_bag.py, test_seams.py",
    "cameras.<name>.frame_id": "frames come from the image headers here; overrides: test_node_params.py",
    "cameras.<name>.hfov_deg": "intrinsics without camera_info: test_node_metric.py",
}


def _parameter_names() -> set[str]:
    return {p.name for p in NODE_PARAMS} | {f"cameras.<name>.{p.name}" for p in CAMERA_PARAMS}


def test_every_parameter_is_covered_or_excluded_with_a_reason():
    """A new parameter cannot land without meeting the others: cover it in MATRIX/COVERED_BY or say why not."""
    table = set(MATRIX) | set(COVERED_BY) | set(EXCLUDED)
    missing = sorted(_parameter_names() - table)
    assert not missing, f"parameters neither in the feature matrix nor excluded with a reason: {missing}"
    stale = sorted((set(COVERED_BY) | set(EXCLUDED)) - _parameter_names())
    assert not stale, f"the matrix names parameters that no longer exist: {stale}"
    assert all(reason.strip() for reason in EXCLUDED.values())
    assert not set(COVERED_BY) & set(EXCLUDED)


# --- the covering array -------------------------------------------------------------------------------------
# Pairs of values no run combines, each with the reason and where that combination is tested instead.
FORBIDDEN = {
    (("backend", "onnxruntime"), ("scale", "pair")): "exporting DA3METRIC-LARGE costs 60-150 s per view count; "
                                                       "the pair on ONNX Runtime: test_onnx.py, test_metric.py",
    (("backend", "onnxruntime_int8"), ("scale", "pair")): "as above (int8 applies to the any-view graph only)",
    (("backend", "openvino"), ("scale", "pair")): "as onnxruntime (the same exported graphs); the pair's engine "
                                                    "rules are the backend's own: test_metric.py",
    (("backend", "openvino_int8"), ("scale", "pair")): "as openvino",
}


def _allowed(run: dict[str, Any]) -> bool:
    return not any(run.get(a) == va and run.get(b) == vb for (a, va), (b, vb) in FORBIDDEN)


def pairwise(factors: dict[str, tuple[Any, ...]], seed: int = 0) -> list[dict[str, Any]]:
    """A small set of runs in which every allowed pair of values of two factors appears at least once (greedy)."""
    names = list(factors)
    uncovered = {((a, va), (b, vb)) for a, b in itertools.combinations(names, 2)
                 for va in factors[a] for vb in factors[b]} - set(FORBIDDEN)
    rng = random.Random(seed)
    runs: list[dict[str, Any]] = []
    while uncovered:
        (a, va), (b, vb) = min(uncovered, key=repr)  # seed each run with a pair still uncovered
        best, best_gain = None, -1
        for _ in range(30):
            run = {a: va, b: vb}
            for n in rng.sample(names, len(names)):
                if n in run:
                    continue
                run[n] = max(factors[n], key=lambda v, n=n, run=run: (
                    _allowed({**run, n: v}),
                    sum(((m, run[m]), (n, v)) in uncovered or ((n, v), (m, run[m])) in uncovered for m in run),
                    rng.random()))
            gain = sum(((x, run[x]), (y, run[y])) in uncovered for x, y in itertools.combinations(names, 2))
            if gain > best_gain:
                best, best_gain = run, gain
        assert best is not None
        runs.append(best)
        uncovered -= {((x, best[x]), (y, best[y])) for x, y in itertools.combinations(names, 2)}
    return runs


RUNS = pairwise(MATRIX)


def test_the_runs_cover_every_pair_of_values():
    pairs = {((a, va), (b, vb)) for a, b in itertools.combinations(MATRIX, 2)
             for va in MATRIX[a] for vb in MATRIX[b]} - set(FORBIDDEN)
    seen = {((a, r[a]), (b, r[b])) for r in RUNS for a, b in itertools.combinations(MATRIX, 2)}
    # backend (5 values) x script (8) alone needs 40 runs: the bound catches a blow-up, not the necessary minimum
    assert pairs <= seen and all(_allowed(r) for r in RUNS) and len(RUNS) <= 45
    assert all(reason for reason in FORBIDDEN.values())


# --- what one run records per emitted set, and the invariants ---------------------------------------------
@dataclass
class SetRecord:
    """What one processed set emitted (messages by topic, withheld notes), with what the harness knew."""

    stamp_ns: int
    cameras: tuple[str, ...]
    is_metric: bool
    messages: dict[str, list[Any]]
    withheld: list[emit.Withheld]
    fused_frame_cfg: str  # the fused frame configured when the set was emitted
    missing_quiet_ns: dict[str, int]  # per camera left out: how long it had sent nothing when the set went out
    timeout_ns: int
    depth_result: dict[str, np.ndarray] = field(default_factory=dict)  # the set's depth arrays, per camera
    relative_odometry_ok: bool = False
    scale_source: str = "none"
    range_known: bool | None = None  # the set's range fit found a scale (None: no range sensor)


class Violation(AssertionError):
    """An invariant the README promises did not hold."""


def check_one_parent(records: list[SetRecord]) -> None:
    """One parent per TF child over the whole run, and no camera frame given a parent but the reference's."""
    parent: dict[str, str] = {}
    for r in records:
        for tf in r.messages.get(emit.TF, []):
            for t in tf.transforms:
                child, p = t.child_frame_id, t.header.frame_id
                if child == p:
                    raise Violation(f"self-transform of {child}")
                if parent.setdefault(child, p) != p:
                    raise Violation(f"{child} has two parents: {parent[child]} and {p}")


def check_fused_frame(records: list[SetRecord]) -> None:
    """points_fused is always in the configured fused frame (the reference's by default)."""
    for r in records:
        for m in r.messages.get(emit.FUSED, []):
            if m.header.frame_id != r.fused_frame_cfg:
                raise Violation(f"points_fused in {m.header.frame_id}, configured {r.fused_frame_cfg}")


def check_metres(records: list[SetRecord]) -> None:
    """Nothing metric-labelled from a non-metric set: nav outputs, camera_frames TF, odometry (unless opted in)."""
    for r in records:
        if r.is_metric:
            continue
        nav = [t for t in (emit.OBSTACLES, emit.SCAN) if r.messages.get(t)]
        if nav:
            raise Violation(f"{nav} from a relative set at {r.stamp_ns}")
        moved = [t.child_frame_id for tf in r.messages.get(emit.TF, []) for t in tf.transforms
                 if t.child_frame_id in FRAMES.values()]
        if moved:
            raise Violation(f"camera frames {moved} published from a relative set")
        if r.messages.get(emit.ODOMETRY) and not r.relative_odometry_ok:
            raise Violation("odometry from a relative set without temporal.publish_relative_odometry")


def check_order(records: list[SetRecord]) -> None:
    """No set emitted twice or out of order (a stamp-backward reset starts a new run of stamps, said by it)."""
    for a, b in zip(records, records[1:]):
        if b.stamp_ns == a.stamp_ns:
            raise Violation(f"set {a.stamp_ns} emitted twice")


def check_withheld_counted(records: list[SetRecord]) -> None:
    """Every withheld output has a counter /diagnostics knows and a text saying why."""
    for r in records:
        for w in r.withheld:
            if w.counter not in COUNTERS or not w.text:
                raise Violation(f"withheld {w.topic} with unknown counter {w.counter!r} or no reason")


def check_partial_only_after_silence(records: list[SetRecord]) -> None:
    """A set without a camera only when that camera sent nothing for the timeout (and still had not)."""
    for r in records:
        for cam, quiet_ns in r.missing_quiet_ns.items():
            if quiet_ns <= r.timeout_ns:
                raise Violation(f"set {r.stamp_ns} without {cam}, quiet only {quiet_ns / 1e6:.0f} ms")


def check_restarts_said(records: list[SetRecord]) -> None:
    """A new temporal chain is always said (chain_restart non-empty where chain_id changes).

    Sets without the reference camera run no window (chain_id 0, README "Temporal window"): not part of a chain.
    """
    last = None
    for r in records:
        for m in r.messages.get(emit.MULTIVIEW, []):
            if not m.views or m.views[0].camera_name != m.reference_camera:
                continue
            if last is not None and m.chain_id != last and not m.chain_restart:
                raise Violation(f"chain {last} -> {m.chain_id} without a reason")
            last = m.chain_id


def check_depth_is_the_sets(records: list[SetRecord]) -> None:
    """Published depth is the set's depth (the documented scale applied once, NaN/Inf kept), per camera."""
    for r in records:
        for cam, depth in r.depth_result.items():
            for m in r.messages.get(emit.camera_topic(cam, "depth"), []):
                got = conv.image_to_array(m)
                if got.shape != depth.shape or not np.array_equal(got, depth.astype(np.float32), equal_nan=True):
                    raise Violation(f"{cam}/depth/image differs from the set's depth")


def check_range_metres(records: list[SetRecord]) -> None:
    """Range metres only once a range fit held: no set labelled metric by a range sensor before its first scale."""
    held = False
    for r in records:
        held = held or bool(r.range_known)
        if r.scale_source == "range" and r.is_metric and not held:
            raise Violation(f"set {r.stamp_ns} labelled metric by a range sensor before any range scale held")


INVARIANTS: list[Callable[[list[SetRecord]], None]] = [
    check_one_parent, check_fused_frame, check_metres, check_order, check_withheld_counted,
    check_partial_only_after_silence, check_restarts_said, check_depth_is_the_sets, check_range_metres]


# --- the harness: a node's data path without DDS -------------------------------------------------------------
@dataclass
class Event:
    """One frame of one camera arriving, or a command (param_set / lifecycle) at an arrival time."""

    arrival_ns: int
    camera: int = -1
    stamp_ns: int = 0
    command: str = ""
    args: dict[str, Any] = field(default_factory=dict)


def script_events(name: str, seed: int) -> Iterator[Event]:
    """A seeded event script: 10 Hz sets with 0-4 ms arrival jitter around the named event."""
    rng = random.Random(seed)
    t = arrival = 1_000_000 * MS
    timeout = 600 * MS

    def sets(n: int, cams=(0, 1), period=100 * MS):
        nonlocal t, arrival
        for _ in range(n):
            t += period
            arrival += period
            order = rng.sample(list(cams), len(cams))
            for k, c in enumerate(order):
                yield Event(arrival + k * rng.randint(0, 4) * MS, c, t)

    yield from sets(4)
    if name == "pause_all":
        t += 3 * timeout
        arrival += 3 * timeout
        yield from sets(4)
    elif name in ("reference_silent", "other_silent", "burst_after_silence"):
        live = (1,) if name == "reference_silent" else (0,)
        yield from sets(int(2.5 * timeout / (100 * MS)), cams=live)
        if name == "burst_after_silence":
            yield from sets(10, period=17 * MS)
        yield from sets(3)
    elif name == "param_set":
        yield Event(arrival + MS, command="param_set", args={"cloud.stride": 4, "fused_frame": FRAMES["right"]})
        yield from sets(4)
    elif name == "lifecycle":
        yield Event(arrival + MS, command="lifecycle")
        arrival += 500 * MS
        yield from sets(4)
    elif name == "stamps_back":
        t -= 5_000 * MS
        yield from sets(4)
    elif name == "K_changed":
        yield Event(arrival + MS, command="K_changed")
        yield from sets(4)


@dataclass
class Harness:
    """The node's per-set path for one run's settings; ``records`` are the sets it emitted."""

    values: dict[str, Any]
    cache_dir: str
    records: list[SetRecord] = field(default_factory=list)
    infos: list[CameraInfo | None] = field(default_factory=list)
    focal_px: float = 40.0

    def __post_init__(self) -> None:
        self.cfg = DepthConfig.from_values(self.values)
        self.rig = build_rig(self.cfg, engine_from_config(self.cfg))
        static_tf = StaticTfBuffer()
        self.ranges = RangeTopics(self.cfg.range_sources, self.cfg.range_fit) if self.cfg.range_sources else None
        if self.ranges is not None:  # the mounts (with pose_conditioning auto they also condition: rig wins)
            for frame, R, t in ((FRAMES["left"], R_AHEAD, [0.2, 0, 0.4]), (FRAMES["right"], R_BEHIND, [-0.2, 0, 0.4]),
                                ("lidar", np.eye(3), [0.0, 0.05, 0.7])):
                T = np.eye(4)
                T[:3, :3], T[:3, 3] = R, t
                static_tf.add("base_link", frame, T)
        self.core = SetProcessor(self.rig, self.cfg.core_config(), static_tf)
        self.timeout_ns = int(self.cfg.value("sync.camera_timeout_s") * 1e9)
        self.sync = TimeSynchronizer(len(CAMERAS), SyncMode(self.cfg.value("sync.mode")),
                                     int(self.cfg.value("sync.slop_s") * 1e9), self.cfg.value("sync.queue_size"),
                                     camera_timeout_ns=self.timeout_ns)
        self.transports = [input_transport(self.cfg.camera(c, "transport")) for c in CAMERAS]
        self.streams = [t.stream() if t.video else None for t in self.transports]  # decoded on arrival
        self.last_arrival: dict[int, int] = {}
        rng = np.random.default_rng(0)
        self.rgb = [rng.integers(0, 255, (42, 56, 3), np.uint8) for _ in CAMERAS]
        self.infos = [self._info(i) for i in range(len(CAMERAS))] if self.values.get("_infos") else [None, None]

    def _info(self, i: int) -> CameraInfo:
        h, w = self.rgb[i].shape[:2]
        f = self.focal_px
        return CameraInfo(header=Header(frame_id=FRAMES[CAMERAS[i]]), height=h, width=w,
                          k=[f, 0.0, w / 2, 0.0, f, h / 2, 0.0, 0.0, 1.0])

    def _frame(self, i: int, stamp_ns: int) -> bytes:
        header = Header(stamp=conv.ns_to_stamp(stamp_ns), frame_id=FRAMES[CAMERAS[i]])
        image = conv.rgb_to_image(self.rgb[i], header)
        if self.transports[i].name == "compressed":
            import cv2

            ok, jpeg = cv2.imencode(".jpg", self.rgb[i][:, :, ::-1])
            assert ok
            return serialize_message(CompressedImage(header=header, format=JPEG_FORMAT, data=jpeg.tobytes()))
        if self.streams[i] is not None:  # the node's on-arrival decode (da3_ros.ros.inputs)
            from test_video_input import encode, ffmpeg_msg

            packet = encode([self.rgb[i]], "h264", gop=1)[0]
            msg = ffmpeg_msg(0, "h264", packet)
            msg.header, msg.width, msg.height = header, self.rgb[i].shape[1], self.rgb[i].shape[0]
            return self.streams[i].feed(serialize_message(msg))
        return serialize_message(image)

    def run(self, events: Iterator[Event]) -> list[SetRecord]:
        for ev in events:
            self._take(ev.arrival_ns)
            if ev.command == "param_set":
                self.cfg = self.cfg.with_values(ev.args)
                self.core.cfg = dataclasses.replace(self.core.cfg, out_cfg=self.cfg.out)
            elif ev.command == "lifecycle":  # deactivate, then activate: the node's _activate
                self.sync.reset()
                self.core.frames.reset_temporal(ResetReason.REACTIVATED, "the node was activated again")
            elif ev.command == "K_changed":
                self.focal_px *= 1.5
                self.infos = [self._info(i) if info is not None else None for i, info in enumerate(self.infos)]
            else:
                self.sync.add(ev.camera, ev.stamp_ns, self._frame(ev.camera, ev.stamp_ns), ev.arrival_ns)
                self.last_arrival[ev.camera] = ev.arrival_ns
                self._take(ev.arrival_ns)
        return self.records

    def _take(self, now_ns: int) -> None:
        frameset = self.sync.take(now_ns)
        if frameset is None:
            return
        images = [None if data is None else t.decode(data) for t, data in zip(self.transports, frameset.items)]
        ref_stamp = frameset.stamps_ns[self.cfg.ref]  # as the node's worker picks the range messages
        ranges = None if self.ranges is None else self.ranges.for_set(
            frameset.newest_stamp_ns if ref_stamp is None else ref_stamp)
        done = self.core.process(images, self.infos, [False] * len(CAMERAS), self.values["_nav"], ranges)
        if not isinstance(done, Processed):
            return
        out = done.outputs
        if self.ranges is not None:
            self._lidar_sees(out, frameset.newest_stamp_ns)
        keys = emit.per_camera_keys(False, self.rig.engine.variant.has_sky)
        items = list(emit.set_messages(out, keys, lambda topic: True))
        if self.values["_nav"]:
            items += list(emit.nav_messages(out, lambda topic: True))
        messages: dict[str, list[Any]] = {}
        for item in items:
            if isinstance(item, emit.Message):
                messages.setdefault(item.topic, []).append(item.msg)
        missing = {CAMERAS[i]: now_ns - self.last_arrival.get(i, 0) for i, s in enumerate(frameset.stamps_ns)
                   if s is None}
        fused_cfg = self.cfg.out.fused_frame or FRAMES[CAMERAS[self.cfg.ref]]
        depth = out.depth_arrays
        self.records.append(SetRecord(
            frameset.newest_stamp_ns, tuple(out.camera_names), bool(out.pred.is_metric), messages,
            [w for w in items if isinstance(w, emit.Withheld)], fused_cfg, missing, self.timeout_ns,
            {c: depth[j] for j, c in enumerate(out.camera_names)},
            bool(self.cfg.value("temporal.publish_relative_odometry")), out.pred.scale_source,
            None if out.result.range_fit is None else out.result.range_fit.known))

    def _lidar_sees(self, out, stamp_ns: int) -> None:
        """The next cloud: this set's views in RANGE_SCALE x its network units, as the lidar would see them."""
        from da3_ros.core import geometry as geo

        pred, parts = out.pred, []
        for j, frame in enumerate(out.frame_ids):
            K, T = pred.K_of(j), self.core.frames.static_tf.lookup("lidar", frame)
            if K is None or T is None:
                continue
            raw = pred.depth[j] / (pred.scale if np.isfinite(pred.scale) else 1.0)
            parts.append(geo.transform_points(T, geo.backproject(raw * RANGE_SCALE, K)[0]))
        if parts:
            header = Header(stamp=conv.ns_to_stamp(stamp_ns), frame_id="lidar")
            self.ranges.add(0, conv.xyz_rgb_to_pointcloud2(np.concatenate(parts), header))


def run_values(run: dict[str, Any], cache_dir: str) -> dict[str, Any]:
    """The node parameters of one matrix run (and the harness's own ``_nav`` / ``_infos``)."""
    backend = run["backend"]
    values: dict[str, Any] = {
        "model": "random:da3-small@0", "process_res": 56, "camera_names": list(CAMERAS),
        "threads": 1,  # forwards at 56 px gain nothing from a second thread: same time, 14 % less CPU (measured)
        "backend": backend.removesuffix("_int8"),
        "precision": "int8" if backend.endswith("_int8") else "auto", "engine_cache_dir": cache_dir,
        "sync.camera_timeout_s": 0.6, "tf.mode": run["tf.mode"], "tf.suffix": run["tf.suffix"],
        "pose_conditioning": run["pose_conditioning"], "temporal.keyframes": run["temporal.keyframes"],
        "temporal.min_interval_s": 0.0, "metric.every_n_sets": run["metric.every_n_sets"],
        "depth.sky_as_inf": run["depth.sky_as_inf"], "cloud.drop_sky": run["cloud.drop_sky"],
        "temporal.publish_relative_odometry": run["temporal.publish_relative_odometry"],
        "nav.target_frame": FRAMES["left"],
        "_nav": run["nav"] == "on", "_infos": run["scale"] == "rig" or run["script"] == "K_changed",
    }
    for c in CAMERAS:
        values[f"cameras.{c}.transport"] = run["transport"]
    if run["scale"] == "rig":
        values["cameras.left.T_ref_cam"] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
        values["cameras.right.T_ref_cam"] = [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    if run["scale"] == "pair":
        values["metric_model"] = METRIC_MODEL
    if run["scale"] == "range":
        values["metric.range_topics"] = ["cloud:/lidar/points"]
        values["metric.range_slop_s"] = 0.25
    return values


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_restored():
    """Give torch's process-wide thread pool back after the runs' ``threads: 1``.

    A later test comparing a node's depth with an in-process forward bit for bit needs both on one thread count.
    """
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache_dir(request, tmp_path_factory) -> Iterator[str]:
    for path in module_dir(request, tmp_path_factory, "matrix_cache"):
        yield str(path)


@pytest.mark.parametrize("k", range(len(RUNS)), ids=lambda k: f"run{k}")
def test_feature_matrix_run(k, cache_dir):
    """One run of the covering array: start-up accepted or refused by name, then every invariant on its sets."""
    run = RUNS[k]
    values = run_values(run, cache_dir)
    try:
        harness = Harness(values, cache_dir)
    except ConfigError as exc:  # a combination the node refuses at start-up: said with the parameter's name
        assert any(name in str(exc) for name in values if not name.startswith("_")), exc
        return
    records = harness.run(script_events(run["script"], seed=k))
    assert records, f"run {run}: no set emitted"
    for invariant in INVARIANTS:
        invariant(records)


# --- each invariant catches its violation ----------------------------------------------------------------------
def _tf(parent: str, child: str):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = parent, child
    return TFMessage(transforms=[t])


def _rec(**kw) -> SetRecord:
    base = dict(stamp_ns=1, cameras=CAMERAS, is_metric=True, messages={}, withheld=[],
                fused_frame_cfg=FRAMES["left"], missing_quiet_ns={}, timeout_ns=600 * MS)
    return SetRecord(**{**base, **kw})


def _pc(frame: str):
    from sensor_msgs.msg import PointCloud2

    return PointCloud2(header=Header(frame_id=frame))


def _mv(chain_id: int, restart: str):
    from da3_ros.msg import DepthView, MultiViewDepth

    return MultiViewDepth(chain_id=chain_id, chain_restart=restart, reference_camera="left",
                          views=[DepthView(camera_name="left")])


VIOLATIONS: dict[Callable[[list[SetRecord]], None], list[SetRecord]] = {
    check_one_parent: [_rec(messages={emit.TF: [_tf("left_optical_frame", "right_optical_frame_da3")]}),
                       _rec(stamp_ns=2, messages={emit.TF: [_tf("right_optical_frame", "right_optical_frame_da3")]})],
    check_fused_frame: [_rec(messages={emit.FUSED: [_pc(FRAMES["right"])]})],
    check_metres: [_rec(is_metric=False, messages={emit.SCAN: [object()]})],
    check_order: [_rec(stamp_ns=5), _rec(stamp_ns=5)],
    check_withheld_counted: [_rec(withheld=[emit.Withheld(emit.FUSED, "no_such_counter", "why")])],
    check_partial_only_after_silence: [_rec(cameras=("left",), missing_quiet_ns={"right": 10 * MS})],
    check_restarts_said: [_rec(messages={emit.MULTIVIEW: [_mv(0, "")]}),
                          _rec(stamp_ns=2, messages={emit.MULTIVIEW: [_mv(1, "")]})],
    check_range_metres: [_rec(scale_source="range", range_known=False), _rec(stamp_ns=2, range_known=True)],
    check_depth_is_the_sets: [_rec(depth_result={"left": np.ones((2, 2), np.float32)},
                                   messages={emit.camera_topic("left", "depth"): [conv.depth_to_image(
                                       np.full((2, 2), 2.0, np.float32), Header())]})],
}


@pytest.mark.parametrize("invariant", INVARIANTS, ids=lambda f: f.__name__)
def test_each_invariant_catches_its_violation(invariant):
    """The injected violation is caught; a clean set passes (so a check cannot raise on everything)."""
    with pytest.raises(Violation):
        invariant(VIOLATIONS[invariant])
    invariant([_rec(), _rec(stamp_ns=2)])
