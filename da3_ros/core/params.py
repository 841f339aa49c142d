"""Every node parameter, declared once: name, default, description. ROS-free so tests and docs can read it.

Per-camera parameters live under ``cameras.<name>.`` for each name in ``camera_names``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any

from da3_ros.core.navigation import GROUND_MODES
from da3_ros.core.preprocess import METHODS, MIXED_MODES
from da3_ros.core.sync import SyncMode


class Backend(str, Enum):
    """``backend``: the runtime of the forward (``auto`` picks the fastest one that can run here)."""

    AUTO = "auto"
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"
    TRITON = "triton"
    OPENVINO = "openvino"


class Precision(str, Enum):
    """``precision``: the forward's arithmetic (``auto``: the backend's own, see the parameter's description)."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"  # onnxruntime on the CPU only (export.int8)


class PoseConditioning(str, Enum):
    """``pose_conditioning``: where the rig's known extrinsics come from."""

    AUTO = "auto"
    PARAMS = "params"
    TF_STATIC = "tf_static"
    OFF = "off"


class TfMode(str, Enum):
    """``tf.mode``: which frames the estimated camera poses are published as."""

    ESTIMATED_CHILDREN = "estimated_children"
    CAMERA_FRAMES = "camera_frames"
    OFF = "off"


class QosKind(str, Enum):
    """``qos.input`` / ``qos.output``."""

    SENSOR_DATA = "sensor_data"
    RELIABLE = "reliable"


class Transport(str, Enum):
    """``cameras.<name>.transport``: image_transport's names."""

    RAW = "raw"
    COMPRESSED = "compressed"
    FFMPEG = "ffmpeg"  # ffmpeg_image_transport_msgs/FFMPEGPacket, H.264 / H.265
    FOXGLOVE = "foxglove"  # foxglove_msgs/CompressedVideo, H.264 / H.265


def choices(kind: type[Enum]) -> tuple[str, ...]:
    """The values of an enum of strings, in declaration order: a parameter's choices."""
    return tuple(str(member.value) for member in kind)


@dataclass(frozen=True)
class Param:
    """One parameter: its declaration, its ROS descriptor (``ros2 param describe``) and its validation."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()  # the allowed strings (in the descriptor's additional_constraints)
    range: tuple[float, float] | None = None  # inclusive bounds (the descriptor's integer/floating point range)
    step: int = 0  # integers: allowed values are range[0] + k * step (0 = any)
    dynamic: bool = False  # applied at runtime by a parameter set; else read-only (needs a restart)
    # YAML (a params file, `-p name:=off`, `ros2 param set`) reads an unquoted ``off`` as the boolean false: for a
    # parameter with an "off" choice, false means that choice (declared dynamically typed so that ROS takes it)
    false_means: str = ""

    def normalize(self, value: Any) -> Any:
        """``value`` as the code takes it: the boolean false is ``false_means`` where the table says so."""
        return self.false_means if self.false_means and value is False else value

    def constraints(self) -> str:
        """The allowed values in words ('' when any value of the type goes)."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.range is not None:
            lo, hi = self.range
            return f"in [{lo}, {hi}]" + (f" in steps of {self.step} from {lo}" if self.step else "")
        return ""

    def problem(self, value: Any) -> str:
        """'' if ``value`` is allowed, else why not (the parameter, the value, the allowed values)."""
        value = self.normalize(value)
        if value is None:  # typed, declared without a value (e.g. cameras.<name>.T_ref_cam)
            return ""
        if self.choices and isinstance(value, bool):  # an unquoted on/off/yes/no/true/false in YAML
            return (f"{self.name} = {value!r} is not allowed: {self.constraints()}; YAML and `-p` read unquoted "
                    f"true/false/on/off/yes/no as a boolean: quote the value (e.g. {self.name}: "
                    f"'{self.false_means or self.choices[0]}')")
        ok = True
        if self.choices:
            ok = value in self.choices
        elif self.range is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = self.range
            ok = lo <= value <= hi and not (self.step and (value - lo) % self.step)
        return "" if ok else f"{self.name} = {value!r} is not allowed: {self.constraints()}"


NODE_PARAMS: tuple[Param, ...] = (
    Param("model", "depth-anything/DA3-SMALL",
          "HF repo id, local dir (config.json + model.safetensors), variant name or random:<variant>[@seed]"),
    Param("backend", "auto",
          "auto (TensorRT if importable with a CUDA GPU, else openvino on an x86 CPU with AVX-512 where it is "
          "installed (precision auto/fp32/bf16), else onnxruntime, else torch), torch, onnxruntime, "
          "tensorrt, triton (a Triton Inference Server: triton.*), openvino (Intel's runtime: x86 CPUs, Intel "
          "GPU/NPU); onnxruntime/tensorrt/openvino also take a .onnx from `da3-ros export` as model",
          choices=choices(Backend)),
    Param("device", "auto",
          "auto (the backend's: torch cpu, onnxruntime its CUDA provider if installed else cpu, tensorrt the GPU), "
          "cpu, cuda, cuda:<n> (cuda:<n> > 0: torch only); openvino: CPU (= auto, cpu), GPU, NPU, AUTO (OpenVINO's "
          "names); a device the backend cannot use stops the start"),
    Param("precision", "auto",
          "auto (torch: fp32 on CPU, bf16/fp16 on CUDA; onnxruntime: fp32; tensorrt: fp16), fp32, fp16 (the "
          "mixed fp16 graph on onnxruntime/tensorrt; openvino on an Intel GPU/NPU, its auto there), bf16 (torch; "
          "openvino on a CPU with AVX512-BF16/AMX, openvino's auto there, gated), int8 (onnxruntime on the CPU: "
          "weight MatMuls quantized; openvino: int8 weights by NNCF, gated; opt-in, accuracy in BENCHMARKS.md); "
          "said at start-up and in /diagnostics",
          choices=choices(Precision)),
    Param("threads", 0, "CPU threads of the forward (0: the backend's default)", range=(0, 1024)),
    Param("engine_cache_dir", "", "exported ONNX graphs and TensorRT engines (default: ~/.cache/da3_ros)"),
    Param("triton.url", "localhost:8001", "backend triton: the server's gRPC endpoint, host:port"),
    Param("triton.model", "da3", "backend triton: model name on the server (`model` names its checkpoint)"),
    Param("triton.model_version", "", "backend triton: model version ('' = the server's latest)"),
    Param("triton.timeout_s", 5.0, "backend triton: deadline per request, seconds; a late set is dropped",
          range=(0.001, 3600.0)),
    Param("triton.ssl", False, "backend triton: TLS to the server"),
    Param("triton.root_certificates", "", "backend triton: PEM file of the root certificates (ssl)"),
    Param("triton.private_key", "", "backend triton: PEM file of the client's private key (ssl, mutual TLS)"),
    Param("triton.certificate_chain", "", "backend triton: PEM file of the client's certificate chain (ssl)"),
    Param("triton.headers", "", "backend triton: headers sent with every call, 'Name: value; Name2: value2' "
          "(e.g. an authorization token)"),
    Param("metric_model", "",
          "a DA3METRIC-LARGE checkpoint to pair with an any-view `model` for metres (the nested pair as two "
          "models); '' = none"),
    Param("metric.every_n_sets", 1, "run the paired metric model on every n-th set; the others reuse the scale",
          range=(1, 100000)),
    Param("metric.filter", True, "smooth the per-set metric scale over time (pair, nested, rig)"),
    Param("metric.filter_window", 9, "sets in the filter's robust median", range=(1, 1000)),
    Param("metric.max_rate_per_s", 0.5, "largest relative change of the applied scale per second (0.5 = 50 %/s)",
          range=(0.001, 1000.0)),
    Param("metric.outlier_ratio", 1.5, "a per-set scale off the median by more than this factor is an outlier",
          range=(1.001, 1000.0)),
    Param("metric.reset_after", 5, "consecutive consistent outliers after which the filter jumps to them",
          range=(1, 1000)),
    Param("metric.range_topics", [], "range sensors whose metres scale every set: <kind>:<topic> entries, kind "
          "cloud (PointCloud2), scan (LaserScan) or depth (16UC1 mm / 32FC1 m Image, camera_info beside it); "
          "[] = none"),
    Param("metric.range_slop_s", 0.1, "a range message is used for a set stamped within this many seconds of it",
          range=(0.001, 10.0)),
    Param("metric.range_max_m", 100.0, "range returns deeper than this in a camera (m, along its axis) are not used",
          range=(0.01, 10000.0)),
    Param("metric.range_min_points", 20, "fewer inliers than this: the set's range scale is unknown",
          range=(3, 10000000)),
    Param("metric.range_max_residual", 0.1, "inliers' relative RMS residual above this: the set's range scale is "
          "unknown", range=(0.0001, 10.0)),
    Param("metric.range_min_confidence", 0.0, "pixels where DA3's confidence is below this take no range return",
          range=(0.0, 1e6)),
    Param("process_res", 504, "network resolution of the longer side (multiple of 14)", range=(14, 4998), step=14),
    Param("process_res_method", "upper_bound_resize", "upstream resize method",
          choices=METHODS),
    Param("mixed_resolution", "crop",
          "cameras of different sizes: crop (upstream: centre-crop to the smallest network size, losing field of "
          "view) or stretch (resize to it: whole field of view, pixel aspect changed); with *_resize methods",
          choices=MIXED_MODES),
    Param("camera_names", ["camera"], "cameras of the rig; each gets cameras.<name>.* parameters"),
    Param("reference_camera", "", "camera whose optical frame is the set's reference (default: the first)"),
    Param("sync.mode", "approximate", "approximate (slop) or exact (hardware-triggered rigs)",
          choices=choices(SyncMode)),
    Param("sync.slop_s", 0.02, "largest stamp spread within one approximate set, seconds", range=(0.0, 10.0)),
    Param("sync.queue_size", 5, "frames kept per camera while waiting for a set", range=(1, 1000)),
    Param("sync.camera_timeout_s", 2.0,
          "a camera silent this long (seconds) is left out: sets go on with the others until it sends again; "
          "0 = every set waits for every camera", range=(0.0, 3600.0)),
    Param("pose_conditioning", "auto",
          "auto: cameras.<name>.T_ref_cam when every camera has one, else /tf_static when it connects every "
          "camera's frame to the reference's; params; tf_static; off (an unquoted off, read as false, is off). "
          "Needs camera_info on every camera", choices=choices(PoseConditioning), false_means="off"),
    Param("tf.mode", "estimated_children",
          "estimated_children: <frame><tf.suffix> frames under the reference camera's frame; "
          "camera_frames: the cameras' own frames under the reference (rigs with no other TF source); off (an "
          "unquoted off, read as false, is off)", choices=choices(TfMode),
          dynamic=True, false_means="off"),
    Param("tf.suffix", "_da3", "suffix of the estimated child frames", dynamic=True),
    Param("tf.publish_alone", False, "true: a /tf listener alone makes the node run forwards, for the poses "
          "only; false: TF comes from the sets computed for another output's subscriber (RViz, Nav2 and "
          "robot_localization listen to /tf all the time)", dynamic=True),
    Param("fused_frame", "", "frame of points_fused (default: the reference camera's frame)", dynamic=True),
    Param("cloud.stride", 2, "use every n-th pixel row and column for clouds", range=(1, 64), dynamic=True),
    Param("cloud.min_confidence", 0.0, "drop points whose confidence is below this", range=(0.0, 1e6), dynamic=True),
    Param("cloud.min_depth", 0.0, "drop points nearer than this (depth units)", range=(0.0, 1e6), dynamic=True),
    Param("cloud.max_depth", 0.0, "drop points farther than this (depth units); 0 = no limit",
          range=(0.0, 1e6), dynamic=True),
    Param("cloud.drop_sky", True, "drop points the model labels sky (the sky/mask pixels)", dynamic=True),
    Param("cloud.confidence_field", False, "add a per-point `confidence` field to the clouds", dynamic=True),
    Param("nav.target_frame", "base_link",
          "frame of points_obstacles and scan (x forward, z up), found from each camera's frame through /tf_static"),
    Param("nav.ground", "z",
          "ground for the height band: z (the target frame's z = 0) or plane (fitted to the points)",
          choices=GROUND_MODES),
    Param("nav.min_height_m", 0.05, "obstacles start this high above the ground (metres)"),
    Param("nav.max_height_m", 1.8, "obstacles end this high above the ground (metres)"),
    Param("nav.voxel_m", 0.05, "voxel size of the obstacle cloud (metres); 0 = no down-sampling", range=(0.0, 10.0)),
    Param("nav.outlier_radius_m", 0.15, "radius for the isolated-point filter (metres)", range=(0.0, 10.0)),
    Param("nav.outlier_min_neighbours", 3, "points with fewer neighbours within the radius are dropped; 0 = off",
          range=(0, 1000)),
    Param("nav.max_range_m", 0.0, "obstacles farther than this horizontally are dropped (metres); 0 = no limit",
          range=(0.0, 10000.0)),
    Param("scan.angle_min", -3.141592653589793, "first ray of scan (radians, counter-clockwise from +x)"),
    Param("scan.angle_max", 3.141592653589793,
          "end of scan (radians): rays at angle_min + i * angle_increment below it, at most one turn"),
    Param("scan.angle_increment", 0.008726646259971648, "angle between rays (radians; default 0.5 degrees)"),
    Param("scan.range_min", 0.1, "nearest range reported (metres)", range=(0.0, 10000.0)),
    Param("scan.range_max", 20.0, "farthest range reported (metres)", range=(0.0, 10000.0)),
    Param("scan.min_height_m", 0.05, "lowest point (target frame z, metres) that counts for scan; the scan's own "
          "band, may be wider than nav.min/max_height_m"),
    Param("scan.max_height_m", 1.8, "highest point (target frame z, metres) that counts for scan"),
    Param("depth.sky_as_inf", True, "publish sky pixels (sky probability >= 0.3, the sky/mask pixels) as +Inf "
          "(REP 118: too far), else upstream's sky fill (99th percentile of non-sky depth)", dynamic=True),
    Param("depth.publish_mm", False, "also publish depth/image_mm as 16UC1 millimetres (metric models)"),
    Param("temporal.keyframes", 0,
          "K: up to K stored keyframes of the reference camera join every forward (N + K views), the windows are "
          "chained into one unit over time and the reference camera's pose is published on `odometry`; 0 = each "
          "set alone (no odometry). Needs a model with poses; no pose conditioning with K > 0", range=(0, 16)),
    Param("temporal.min_translation_rel", 0.05,
          "keyframe rule: translation since the newest keyframe / the view's median depth that makes a new "
          "keyframe", range=(1e-6, 100.0)),
    Param("temporal.min_rotation_deg", 5.0, "keyframe rule: or a rotation since the newest keyframe of this many "
          "degrees", range=(1e-6, 180.0)),
    Param("temporal.min_interval_s", 0.1, "keyframe rule: at most one new keyframe per this many seconds of "
          "stamps", range=(0.0, 3600.0)),
    Param("temporal.min_sharpness_ratio", 0.5, "keyframe rule: a view blurrier than this x the stored "
          "keyframes' median sharpness is not stored", range=(0.0, 1.0)),
    Param("temporal.max_gap_s", 2.0, "a gap between processed sets longer than this (a paused stream) restarts "
          "the chain", range=(0.001, 3600.0)),
    Param("temporal.alignment", "sim3", "how consecutive windows are aligned on their shared keyframes: sim3 "
          "(point maps, confidence-weighted, robust) or scale (depth ratios; poses from the windows)",
          choices=("sim3", "scale")),
    Param("temporal.publish_tf", True, "with temporal.keyframes > 0: TF temporal.odom_frame -> "
          "temporal.child_frame at each set's stamp"),
    Param("temporal.publish_relative_odometry", False, "publish `odometry` from a chain that is not in metres "
          "(a relative model: pose and covariance in an arbitrary unit of the chain's first window); false: "
          "withheld, counted as odom_not_metric, /diagnostics WARN"),
    Param("temporal.odom_frame", "odom_da3", "frame of `odometry` and the root of its TF: the reference "
          "camera's optical frame at the chain's start (z forward, x right, y down); not the robot's odom"),
    Param("temporal.child_frame", "", "child frame of `odometry` and its TF (default: the reference camera's "
          "frame + tf.suffix, a frame nothing else parents)"),
    Param("qos.input", "sensor_data", "input QoS: sensor_data (best effort) or reliable",
          choices=choices(QosKind)),
    Param("qos.output", "reliable", "output QoS: reliable or sensor_data", choices=choices(QosKind)),
    Param("qos.depth", 5, "history depth of every queue", range=(1, 1000)),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics", range=(0.01, 3600.0)),
)

CAMERA_PARAMS: tuple[Param, ...] = (
    Param("image_topic", "", "image topic (default: <name>/image_raw)"),
    Param("transport", "raw", "image transport (image_transport's names): raw (sensor_msgs/Image on image_topic), "
          "compressed (sensor_msgs/CompressedImage, JPEG or PNG, on <image_topic>/compressed; only the frames "
          "of the sets processed are decoded), ffmpeg (ffmpeg_image_transport_msgs/FFMPEGPacket on "
          "<image_topic>/ffmpeg) or foxglove (foxglove_msgs/CompressedVideo on <image_topic>/foxglove): H.264 / "
          "H.265 video, every packet decoded on arrival (PyAV)", choices=choices(Transport)),
    Param("camera_info_topic", "", "camera_info topic (default: <name>/camera_info)"),
    Param("frame_id", "", "optical frame override (default: the image header's frame_id)"),
    Param("T_ref_cam", [0.0] * 0, "known pose in the reference camera frame: x y z qx qy qz qw (metres)"),
    Param("hfov_deg", 0.0, "horizontal field of view (degrees) for a camera without camera_info: a centred "
          "pinhole K, so that metric models get their focal and clouds their intrinsics; 0 = none"),
)


def camera_param(camera: str, field: str) -> str:
    """Full parameter name of a per-camera field."""
    return f"cameras.{camera}.{field}"


def all_param_names(camera_names: list[str]) -> set[str]:
    """Every parameter name valid for a node with these cameras."""
    return {p.name for p in NODE_PARAMS} | {camera_param(c, p.name) for c in camera_names for p in CAMERA_PARAMS}


def param_table(camera_names: list[str] | None = None) -> dict[str, Param]:
    """Every parameter by its full name (per-camera ones for ``camera_names``)."""
    table = {p.name: p for p in NODE_PARAMS}
    for c in camera_names or []:
        table.update({camera_param(c, p.name): dataclasses.replace(p, name=camera_param(c, p.name))
                      for p in CAMERA_PARAMS})
    return table


_NODE_TABLE = {p.name: p for p in NODE_PARAMS}


def normalized(name: str, value: Any) -> Any:
    """A parameter's value as the code takes it (a YAML false for ``tf.mode`` / ``pose_conditioning`` is 'off').

    The one place that maps it, for the node (ros_params), the parameter file and ``-p`` of the offline commands
    (param_file); a true stays true, and ``check_values`` refuses it naming the fix.
    """
    p = _NODE_TABLE.get(name)
    return p.normalize(value) if p is not None else value


def check_values(values: dict[str, Any], camera_names: list[str] | None = None) -> list[str]:
    """What is wrong with these values, one line each (names the parameter, the value, the allowed values)."""
    table = param_table(camera_names)
    problems = [problem for name, value in values.items()
                if name in table and (problem := table[name].problem(value))]
    if "tf.suffix" in values and (problem := tf_suffix_problem(values["tf.suffix"], [])):
        problems.append(problem)
    return problems


def tf_suffix_problem(suffix: Any, frames: list[str]) -> str:
    """'' if ``suffix`` makes no estimated frame (``<frame><suffix>``) equal a camera frame of ``frames``, else why.

    An empty suffix names every camera's own frame: a self-transform for the reference and a second parent for
    the robot's camera frames (the same rule as ``fused_frame``: the robot's TF tree is never fought).
    """
    if not isinstance(suffix, str) or not suffix:
        return (f"tf.suffix = {suffix!r} is not allowed: the estimated frames <camera frame><tf.suffix> would be "
                "the cameras' own frames (a self-transform, a second parent for the robot's camera frames); give "
                "a non-empty suffix such as '_da3', or tf.mode camera_frames to move the cameras' own frames")
    clash = sorted(f + suffix for f in frames if f + suffix in frames)
    if clash:
        return (f"tf.suffix = {suffix!r} is not allowed: estimated frame(s) {clash} would be camera frames of this "
                f"rig {frames}; choose a suffix no camera frame ends with (e.g. '_da3')")
    return ""


def fused_frame_problem(fused_frame: str, frames: list[str], suffix: str) -> str:
    """'' if ``fused_frame`` ('' = the reference camera's) is a camera frame or its estimated frame, else why."""
    allowed = [f for frame in frames for f in (frame, frame + suffix)]
    if not fused_frame or fused_frame in allowed:
        return ""
    return f"fused_frame = {fused_frame!r} is not allowed: '' (the reference camera's frame) or one of {allowed}"
