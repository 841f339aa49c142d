"""``depth_node``: N synchronized cameras -> ONE DA3 forward -> depth, confidence, camera_info, clouds, TF.

Wiring only: parameters (declared from da3_ros.params), subscriptions, publishers, a worker thread and
diagnostics. The maths lives in the ROS-free core (sync, rig, engines, geometry, outputs).
"""
from __future__ import annotations

import dataclasses
import gc
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.event_handler import SubscriptionEventCallbacks
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2
from tf2_msgs.msg import TFMessage

from da3_ros import conversions as conv
from da3_ros.diagnostics import NodeStats
from da3_ros.engines.base import EngineUnavailable
from da3_ros.msg import MultiViewDepth
from da3_ros.outputs import OUTPUT_PARAMS, nav_configs, output_config
from da3_ros.params import (CAMERA_PARAMS, NODE_PARAMS, Param, camera_param, check_values, fused_frame_problem,
                            param_table, scale_filter_config)
from da3_ros.pipeline import POSE_CONDITIONING, failure_text, CoreConfig, DropReason, Dropped, SetProcessor
from da3_ros.ros_main import run
from da3_ros.static_tf import StaticTfBuffer
from da3_ros.sync import SyncMode, TimeSynchronizer

PER_CAMERA_OUTPUTS = {  # output -> (topic under <camera>/, type)
    "depth": ("depth/image", Image), "depth_mm": ("depth/image_mm", Image),
    "camera_info": ("depth/camera_info", CameraInfo), "confidence": ("confidence/image", Image),
    "sky": ("sky/mask", Image), "points": ("points", PointCloud2),
}


def parameter_descriptor(p: Param) -> ParameterDescriptor:
    """The ROS descriptor of a parameter of the table (``ros2 param describe``); rclpy enforces its range."""
    d = ParameterDescriptor(description=p.description, read_only=not p.dynamic,
                            additional_constraints=p.constraints())
    if p.range is not None:
        lo, hi = p.range
        if isinstance(p.default, int) and not isinstance(p.default, bool):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=p.step)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


def _qos(kind: str, depth: int) -> QoSProfile:
    if kind == "sensor_data":
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
    if kind == "reliable":
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
    raise ValueError(f"QoS must be sensor_data or reliable, got {kind!r}")


class DepthPipeline:
    """The node's wiring in lifecycle phases, for a ``Node`` (all at once) or a ``LifecycleNode`` (on command).

    declare (parameters) -> configure (engine, publishers) -> activate (subscriptions, worker, diagnostics)
    -> deactivate (all of those stopped) -> cleanup (publishers and engine released).
    """

    # Class-level, so that destroying a node whose construction failed half-way finds them (no second traceback)
    _worker: threading.Thread | None = None
    _active = False

    def _declare(self) -> None:
        for p in NODE_PARAMS:
            self._declare_one(p, p.default)
        self.cameras: list[str] = list(self._p("camera_names"))
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"camera_names must be unique and non-empty, got {self.cameras}")
        table = param_table(self.cameras)
        for c in self.cameras:
            for p in CAMERA_PARAMS:
                self._declare_one(table[camera_param(c, p.name)],
                                  Parameter.Type.DOUBLE_ARRAY if p.default == [] else p.default)
        problems = check_values({name: self._p(name) for name in table}, self.cameras)
        ref_name = self._p("reference_camera") or self.cameras[0]
        if ref_name not in self.cameras:
            problems.append(f"reference_camera {ref_name!r} is not in camera_names {self.cameras}")
        overrides = [self._p(camera_param(c, "frame_id")) for c in self.cameras]
        if all(overrides):  # every frame known before the first image: check fused_frame now
            problems.append(fused_frame_problem(self._p("fused_frame"), overrides, self._p("tf.suffix")))
        if any(problems):
            raise ValueError("; ".join(p for p in problems if p))
        self.ref = self.cameras.index(ref_name)
        self.out_cfg = output_config(self._p)
        self.nav_cfg = nav_configs(self._p)
        self._subs: list = []
        self._worker: threading.Thread | None = None
        self._diag_timer = None
        self._stop = threading.Event()

    def _configure(self) -> None:
        self.rig = self._build_rig()
        if self._p("depth.publish_mm") and self.rig.engine.variant.depth_kind.value == "relative":
            self.get_logger().warning(f"depth.publish_mm with {self.rig.engine.variant.name}: its depth is relative, "
                                   "so depth/image_mm is not millimetres")
        self.stats = NodeStats(self.cameras, self.rig.engine.backend)
        self.sync = TimeSynchronizer(len(self.cameras), SyncMode(self._p("sync.mode")),
                                     int(self._p("sync.slop_s") * 1e9), self._p("sync.queue_size"),
                                     camera_timeout_ns=int(self._p("sync.camera_timeout_s") * 1e9))
        self._infos: list[CameraInfo | None] = [None] * len(self.cameras)
        self._wake = threading.Event()
        self.static_tf = StaticTfBuffer()
        self.core = self._make_core()
        self._create_publishers()
        self.get_logger().info(
            f"model {self.rig.engine.label} on {self.rig.engine.backend}; cameras {self.cameras}, "
            f"reference {self.cameras[self.ref]}; pose conditioning: {self._p('pose_conditioning')} "
            f"({'parameters' if self.rig.T_ref_cam_known is not None else 'from /tf_static when available'})")

    def _activate(self) -> None:
        self._create_subscriptions()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="da3_worker", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(self._p("diagnostics_period_s"), self._publish_diagnostics)

    def _deactivate(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=30.0)  # a forward in flight finishes first
            self._worker = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None

    def _cleanup(self) -> None:
        for pub in [p for pubs in self.pubs for p in pubs.values()] + self._set_publishers:
            self.destroy_publisher(pub)
        self.pubs, self._set_publishers = [], []
        self.rig = self.core = None  # the engine (weights, sessions) goes with them
        gc.collect()
        self.get_logger().info("engine released")

    def _declare_one(self, p: Param, default) -> None:
        """Declare with its descriptor (description, range, choices, read-only); a value out of range is named."""
        try:
            self.declare_parameter(p.name, default, parameter_descriptor(p))
        except InvalidParameterValueException as exc:
            raise ValueError(f"{p.name}: {exc.args[0]} (allowed: {p.constraints()})") from None

    def _watch_parameters(self) -> None:
        """Parameter sets: invalid values refused with the reason; output settings applied to the next set."""
        self.add_on_set_parameters_callback(self._check_set)
        self.add_post_set_parameters_callback(self._apply_set)

    def _check_set(self, params: list[Parameter]) -> SetParametersResult:
        new = {p.name: p.value for p in params}
        problems = check_values(new, self.cameras)
        if not problems and set(new) & set(OUTPUT_PARAMS):
            try:
                output_config(lambda name: new[name] if name in new else self._p(name))
            except ValueError as exc:
                problems.append(str(exc))
        return SetParametersResult(successful=not problems, reason="; ".join(problems))

    def _apply_set(self, params: list[Parameter]) -> None:
        if not {p.name for p in params} & set(OUTPUT_PARAMS):
            return
        self.out_cfg = output_config(self._p)
        if getattr(self, "core", None) is not None:  # configured: the worker's next set uses it
            self.core.cfg = dataclasses.replace(self.core.cfg, out_cfg=self.out_cfg)
        self.get_logger().info(f"applied {', '.join(p.name for p in params)}")

    def _p(self, name: str):
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # typed parameters declared without a value
            return None

    # --- set-up ----------------------------------------------------------------------------------------
    def _build_rig(self):
        from da3_ros.engines import create_engine
        from da3_ros.rig import Rig

        from da3_ros.engines.triton_engine import triton_settings

        engine = create_engine(self._p("backend"), self._p("model"), device=self._p("device"),
                               precision=self._p("precision"), threads=self._p("threads"),
                               cache_dir=self._p("engine_cache_dir") or None, process_res=self._p("process_res"),
                               process_res_method=self._p("process_res_method"), ref_view_strategy="first",
                               mixed_resolution=self._p("mixed_resolution"),
                               triton=triton_settings(self._p) if self._p("backend") == "triton" else None,
                               metric_model=self._p("metric_model"),
                               metric_every_n_sets=self._p("metric.every_n_sets"))
        if not engine.trained:
            self.get_logger().warning(f"{engine.label}: depth, poses and clouds are MEANINGLESS (untrained)")
        return Rig(engine, self.ref, self._known_extrinsics(engine.variant.has_pose), scale_filter_config(self._p))

    def _known_extrinsics(self, has_pose: bool) -> np.ndarray | None:
        from da3_ros.geometry import R_from_quaternion, invert_T

        mode = self._p("pose_conditioning")
        if mode not in POSE_CONDITIONING:
            raise ValueError(f"pose_conditioning must be one of {POSE_CONDITIONING}, got {mode!r}")
        raw = [list(self._p(camera_param(c, "T_ref_cam")) or []) for c in self.cameras]
        if mode in ("off", "tf_static") or (mode == "auto" and not all(raw)):
            return None
        bad = [c for c, v in zip(self.cameras, raw) if len(v) != 7]
        if bad:
            raise ValueError(f"pose_conditioning=params needs cameras.<name>.T_ref_cam = [x,y,z,qx,qy,qz,qw] for {bad}")
        if not has_pose:
            self.get_logger().warning("this model takes no pose conditioning; cameras.*.T_ref_cam ignored")
            return None
        T = np.tile(np.eye(4), (len(raw), 1, 1))
        for i, v in enumerate(raw):
            T[i, :3, :3], T[i, :3, 3] = R_from_quaternion(np.array(v[3:])), v[:3]
        return invert_T(T[self.ref])[None] @ T  # the reference camera is the origin, whatever was given

    def _topics(self, c: str) -> tuple[str, str]:
        return (self._p(camera_param(c, "image_topic")) or f"{c}/image_raw",
                self._p(camera_param(c, "camera_info_topic")) or f"{c}/camera_info")

    def _create_publishers(self) -> None:
        qout = _qos(self._p("qos.output"), self._p("qos.depth"))
        self.pubs: list[dict] = []
        self._info_topics = [self._topics(c)[1] for c in self.cameras]
        for c in self.cameras:
            outputs = dict(PER_CAMERA_OUTPUTS)
            if not self._p("depth.publish_mm"):
                outputs.pop("depth_mm")
            if not self.rig.engine.variant.has_sky:
                outputs.pop("sky")
            self.pubs.append({k: self.create_publisher(t, f"{c}/{topic}", qout) for k, (topic, t) in outputs.items()})
        self.pub_fused = self.create_publisher(PointCloud2, "points_fused", qout)
        self.pub_obstacles = self.create_publisher(PointCloud2, "points_obstacles", qout)
        self.pub_scan = self.create_publisher(LaserScan, "scan", qout)
        self.pub_multiview = self.create_publisher(MultiViewDepth, "multiview_depth", qout)
        self.pub_tf = self.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self._set_publishers = [self.pub_fused, self.pub_obstacles, self.pub_scan, self.pub_multiview, self.pub_tf,
                                self.pub_diag]

    def _create_subscriptions(self) -> None:
        qin = _qos(self._p("qos.input"), self._p("qos.depth"))
        for i, c in enumerate(self.cameras):
            image_topic, info_topic = self._topics(c)
            events = SubscriptionEventCallbacks(incompatible_qos=lambda e, t=image_topic: self._incompatible(t, e))
            # raw: frames arrive as CDR bytes; only those of the set that gets processed are deserialised
            self._subs.append(self.create_subscription(Image, image_topic, lambda m, i=i: self._on_image(i, m), qin,
                                                       event_callbacks=events, raw=True))
            self._subs.append(self.create_subscription(CameraInfo, info_topic, lambda m, i=i: self._on_info(i, m),
                                                       qin))
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs.append(self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, latched))

    # --- callbacks (executor thread) -------------------------------------------------------------------
    def _incompatible(self, topic: str, event) -> None:
        self.stats.count("incompatible_qos")
        self.get_logger().warning(
            f"a publisher on {topic} offers an incompatible QoS (policy {event.last_policy_kind}); no images will "
            f"arrive from it: set qos.input to match (now {self._p('qos.input')})")

    def _on_tf_static(self, msg: TFMessage) -> None:
        for t in msg.transforms:
            self.static_tf.add(t.header.frame_id, t.child_frame_id, conv.transform_to_T(t.transform))

    def _on_info(self, i: int, msg: CameraInfo) -> None:
        self._infos[i] = msg

    def _on_image(self, i: int, data: bytes) -> None:
        self.stats.frame_in(i)
        try:
            stamp_ns = conv.stamp_ns_from_cdr(data)  # 12 bytes read; most frames are superseded unread
        except conv.ConversionError as exc:
            self.stats.count("bad_input")
            self.get_logger().error(f"{self.cameras[i]}: {exc}", throttle_duration_sec=5.0)
            return
        if self.sync.add(i, stamp_ns, data, time.monotonic_ns()):
            self._wake.set()

    # --- worker thread ---------------------------------------------------------------------------------
    def _wanted(self) -> bool:
        counts = [p.get_subscription_count() for pubs in self.pubs for p in pubs.values()]
        counts += [p.get_subscription_count() for p in (self.pub_fused, self.pub_multiview, self.pub_obstacles,
                                                         self.pub_scan)]
        if self.rig.engine.variant.has_pose and self.out_cfg.tf_mode != "off":
            counts.append(self.pub_tf.get_subscription_count())
        return any(counts)

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.2):
                continue
            self._wake.clear()
            frameset = self.sync.take()
            if frameset is None:
                continue
            if not self._wanted():
                self.stats.count("skipped_no_subscribers")
                continue
            try:
                self._process(frameset)
            except conv.ConversionError as exc:
                self.stats.count("bad_input")
                self.get_logger().error(f"dropped a set: {exc}", throttle_duration_sec=5.0)
            except EngineUnavailable as exc:  # a remote engine down or late: dropped, counted; it reconnects
                self.stats.count("engine_unavailable")
                self.get_logger().warning(f"dropped a set: {exc}", throttle_duration_sec=5.0)
            except Exception as exc:  # the node must survive anything one set can do
                if not self.context.ok():  # shutting down (Ctrl-C): publishers are gone, nothing to report
                    return
                self.stats.count("errors")
                self.get_logger().error(f"set failed: {failure_text(exc)}", throttle_duration_sec=5.0)

    def _make_core(self) -> SetProcessor:
        """The per-set policy (da3_ros.pipeline), shared with ``da3-ros bag``."""
        cfg = CoreConfig(list(self.cameras), [self._p(camera_param(c, "frame_id")) or "" for c in self.cameras],
                         self._p("pose_conditioning"), self.out_cfg, self.nav_cfg,
                         [float(self._p(camera_param(c, "hfov_deg")) or 0.0) for c in self.cameras])
        return SetProcessor(self.rig, cfg, self.static_tf, warn=self.get_logger().warning)  # each note said once

    def _process(self, frameset) -> None:
        items = [None if data is None else deserialize_message(data, Image) for data in frameset.items]  # None: silent
        pending = [info is None and bool(self.count_publishers(topic))
                   for info, topic in zip(self._infos, self._info_topics)]
        wants_nav = bool(self.pub_obstacles.get_subscription_count() or self.pub_scan.get_subscription_count())
        done = self.core.process(items, list(self._infos), pending, wants_nav)
        if isinstance(done, Dropped):
            if done.reason is DropReason.BAD_INPUT:
                self.stats.count("bad_input")
                self.get_logger().error(f"dropped a set: {done.detail}", throttle_duration_sec=5.0)
                return
            self.stats.count("waiting_for_cameras")
            if done.reason is DropReason.WAITING_FOR_CONDITIONING:
                self.get_logger().warning(done.detail, throttle_duration_sec=10.0)
            return
        out = done.outputs
        t2 = time.perf_counter()
        for j, i in enumerate(done.cameras):  # j: index in this set, i: camera of the rig
            for key, pub in self.pubs[i].items():
                if pub.get_subscription_count():
                    msg = getattr(out, key)(j)
                    if msg is not None:
                        pub.publish(msg)
        if self.pub_fused.get_subscription_count():
            try:
                fused = out.fused()
            except ValueError as exc:  # fused_frame names no camera frame of this rig: the other outputs go on
                fused = None
                self.stats.count("errors")
                self.get_logger().error(f"points_fused: {exc}", throttle_duration_sec=5.0)
            if fused is not None:
                self.pub_fused.publish(fused)
        if self.pub_multiview.get_subscription_count():
            self.pub_multiview.publish(out.multiview())
        transforms = out.transforms()
        if transforms:
            self.pub_tf.publish(conv.tf_message(transforms))
        t_nav = time.perf_counter()
        if wants_nav:
            try:
                for pub, make in ((self.pub_obstacles, out.obstacles), (self.pub_scan, out.scan)):
                    if pub.get_subscription_count():
                        pub.publish(make())
            except ValueError as exc:  # a missing TF link, no intrinsics, no ground plane: said, counted
                self.stats.count("nav_unavailable")
                self.get_logger().error(f"points_obstacles / scan: {exc}", throttle_duration_sec=5.0)
        t3 = time.perf_counter()
        stamp_age_s = (self.get_clock().now().nanoseconds - frameset.newest_stamp_ns) / 1e9
        self.stats.set_scale(out.pred, self.rig.scale, self.core.without_K)
        self.stats.set_done(
            sync_wait=(frameset.complete_ns - frameset.first_arrival_ns) / 1e9, **done.timing_s,
            publish=t3 - t2, latency=stamp_age_s, clouds=out.clouds_built,
            **({"nav": t3 - t_nav} if wants_nav else {}))

    # --- diagnostics -----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        silent = [self.cameras[i] for i in self.sync.silent_streams(time.monotonic_ns())]
        msg = self.stats.diagnostics(self.get_name(), self.sync.stats, self.rig.engine.health(), silent)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)



class DepthNode(DepthPipeline, Node):
    """The da3_ros node, configured and active from the start; see README for topics, parameters, frames."""

    def __init__(self, **kwargs):
        super().__init__("da3_depth", **kwargs)
        self._declare()
        self._watch_parameters()
        self._configure()
        self._activate()

    def destroy_node(self):
        if self._worker is not None:
            self._deactivate()
        return super().destroy_node()


def main(args=None) -> int:
    return run(DepthNode, args, "da3_depth")
