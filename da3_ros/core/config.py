"""One typed configuration from any ``name -> value`` getter: the node's parameters, a YAML file, CLI ``-p``.

``DepthConfig.from_getter`` validates every value against the one parameter table (``core.params``) and
derives what each part needs: the cameras and the pinned reference, the output, navigation and metric-scale
settings, the per-set policy's ``CoreConfig``. The node and the offline commands both build from it, so they
cannot disagree. ROS-free.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from da3_ros.core import navigation as nav
from da3_ros.core.errors import ConfigError
from da3_ros.core.metric_scale import ScaleFilterConfig
from da3_ros.core.range_scale import RangeFitConfig, RangeSource, parse_range_topics
from da3_ros.core.stamps import NS_PER_S
from da3_ros.core.temporal.chain import ChainConfig
from da3_ros.core.temporal.keyframes import KeyframeRule
from da3_ros.core.temporal.tracker import TemporalConfig
from da3_ros.core.params import (CAMERA_PARAMS, NODE_PARAMS, PoseConditioning, TfMode, camera_param, check_values,
                                 fused_frame_problem, normalized, param_table, tf_suffix_problem)

Getter = Callable[[str], Any]  # a parameter's value by full name; None for a typed one declared without value


@dataclass(frozen=True)
class OutputConfig:
    """How a set's outputs are built (the runtime-settable ``cloud.*``, ``depth.*``, ``tf.*``, ``fused_frame``)."""

    stride: int = 2
    min_confidence: float = 0.0
    min_depth: float = 0.0
    max_depth: float = 0.0  # 0 = no limit
    drop_sky: bool = True
    sky_as_inf: bool = True
    tf_mode: str = TfMode.ESTIMATED_CHILDREN.value
    tf_suffix: str = "_da3"
    tf_publish_alone: bool = False  # a /tf listener alone runs forwards (see forward_wanted)
    fused_frame: str = ""  # "" = the reference camera's frame
    confidence_field: bool = False  # a per-point ``confidence`` field in the clouds
    odom_relative: bool = False  # temporal.publish_relative_odometry: odometry from a chain not in metres
    odom_frame: str = "odom_da3"  # temporal.odom_frame: the odometry's frame and TF root
    odom_child_frame: str = ""  # temporal.child_frame; "" = the reference camera's frame + tf_suffix
    odom_tf: bool = True  # temporal.publish_tf
    # the tf.suffix of the default odometry child, fixed at start-up: a runtime tf.suffix renames the cameras'
    # estimated frames, never the chain's child mid-run ("" = tf_suffix, i.e. as at start-up)
    odom_child_suffix: str = ""

    def __post_init__(self) -> None:
        modes = tuple(m.value for m in TfMode)
        if self.tf_mode not in modes:
            raise ConfigError(f"tf.mode must be one of {modes}, got {self.tf_mode!r}")
        if self.stride < 1:
            raise ConfigError(f"cloud.stride must be >= 1, got {self.stride}")
        if not self.odom_frame or self.odom_frame == self.odom_child_frame:
            raise ConfigError(f"temporal.odom_frame must name a frame other than temporal.child_frame, got "
                              f"{self.odom_frame!r} and {self.odom_child_frame!r}")

    def forward_wanted(self, outputs_listened: bool, tf_listened: bool, tf_applies: bool) -> bool:
        """Whether a set is worth a forward, from who listens: an output other than /tf has a subscriber.

        A /tf listener alone counts only with ``tf.publish_alone`` and when the set publishes TF (``tf_applies``:
        poses and tf.mode not off, or the temporal odometry's TF): RViz, Nav2 and robot_localization listen to
        /tf all the time, so by default TF goes out from the sets computed for another subscriber.
        """
        return outputs_listened or (self.tf_publish_alone and tf_listened and tf_applies)

    @property
    def odom_suffix(self) -> str:
        """The tf.suffix of the odometry's default child: the one at start-up (``odom_child_suffix``)."""
        return self.odom_child_suffix or self.tf_suffix

    def odom_child(self, reference_frame: str) -> str:
        """The odometry's child frame: temporal.child_frame, else the reference frame + the start-up tf.suffix."""
        return self.odom_child_frame or reference_frame + self.odom_suffix


# The parameters OutputConfig is made of: the ones a parameter set applies to the next set
OUTPUT_PARAMS = ("cloud.stride", "cloud.min_confidence", "cloud.min_depth", "cloud.max_depth", "cloud.drop_sky",
                 "depth.sky_as_inf", "tf.mode", "tf.suffix", "fused_frame", "cloud.confidence_field",
                 "tf.publish_alone")


def output_config(param: Getter) -> OutputConfig:
    """The output settings from ``param(name)``; ConfigError if invalid."""
    return OutputConfig(
        stride=param("cloud.stride"), min_confidence=param("cloud.min_confidence"),
        min_depth=param("cloud.min_depth"), max_depth=param("cloud.max_depth"), drop_sky=param("cloud.drop_sky"),
        sky_as_inf=param("depth.sky_as_inf"), tf_mode=param("tf.mode"), tf_suffix=param("tf.suffix"),
        fused_frame=param("fused_frame"), confidence_field=param("cloud.confidence_field"),
        odom_frame=param("temporal.odom_frame"), odom_child_frame=param("temporal.child_frame"),
        odom_tf=bool(param("temporal.publish_tf")), tf_publish_alone=bool(param("tf.publish_alone")),
        odom_relative=bool(param("temporal.publish_relative_odometry")))


def range_config(param: Getter) -> tuple[tuple[RangeSource, ...], RangeFitConfig]:
    """The range topics (``metric.range_topics``) and how their returns are fitted; ConfigError if invalid."""
    cfg = RangeFitConfig(slop_s=float(param("metric.range_slop_s")), max_m=float(param("metric.range_max_m")),
                         min_points=int(param("metric.range_min_points")),
                         max_residual=float(param("metric.range_max_residual")),
                         min_confidence=float(param("metric.range_min_confidence")))
    return parse_range_topics(param("metric.range_topics")), cfg


def temporal_config(param: Getter) -> TemporalConfig | None:
    """The temporal window from ``param(name)``; None with ``temporal.keyframes`` 0 (each set alone)."""
    k = int(param("temporal.keyframes"))
    if k == 0:
        return None
    try:
        rule = KeyframeRule(k, float(param("temporal.min_translation_rel")), float(param("temporal.min_rotation_deg")),
                            int(round(float(param("temporal.min_interval_s")) * NS_PER_S)),
                            float(param("temporal.min_sharpness_ratio")))
    except ValueError as exc:
        raise ConfigError(f"temporal.*: {exc}") from exc
    return TemporalConfig(rule, ChainConfig(method=str(param("temporal.alignment"))),
                          int(round(float(param("temporal.max_gap_s")) * NS_PER_S)))


@dataclass(frozen=True)
class NavConfig:
    """The navigation outputs' settings: obstacle cloud, scan and the frame both are in."""

    obstacles: nav.ObstacleConfig
    scan: nav.ScanConfig
    target_frame: str


def nav_config(param: Getter) -> NavConfig:
    """The navigation settings from ``param(name)``; ConfigError if invalid."""
    obstacles = nav.ObstacleConfig(
        min_height_m=param("nav.min_height_m"), max_height_m=param("nav.max_height_m"), ground=param("nav.ground"),
        voxel_m=param("nav.voxel_m"), outlier_radius_m=param("nav.outlier_radius_m"),
        outlier_min_neighbours=param("nav.outlier_min_neighbours"), max_range_m=param("nav.max_range_m"))
    scan = nav.ScanConfig(
        angle_min=param("scan.angle_min"), angle_max=param("scan.angle_max"),
        angle_increment=param("scan.angle_increment"), range_min=param("scan.range_min"),
        range_max=param("scan.range_max"), min_height_m=param("scan.min_height_m"),
        max_height_m=param("scan.max_height_m"))
    target = param("nav.target_frame")
    if not target:
        raise ConfigError("nav.target_frame must name a frame (e.g. base_link)")
    return NavConfig(obstacles, scan, target)


def scale_filter_config(param: Getter) -> ScaleFilterConfig:
    """The metric scale filter from ``param(name)``; ConfigError if invalid."""
    return ScaleFilterConfig(enabled=bool(param("metric.filter")), window=int(param("metric.filter_window")),
                             max_rate_per_s=float(param("metric.max_rate_per_s")),
                             outlier_ratio=float(param("metric.outlier_ratio")),
                             reset_after=int(param("metric.reset_after")))


@dataclass(frozen=True)
class CoreConfig:
    """What the per-set policy needs, for the cameras of one set (the rig's, or those not silent)."""

    camera_names: list[str]
    frame_id_overrides: list[str]  # cameras.<name>.frame_id; "" = the image header's frame_id
    pose_conditioning: str
    out_cfg: OutputConfig
    nav_cfg: NavConfig | None = None  # None = no navigation outputs
    hfov_deg: list[float] = field(default_factory=list)  # cameras.<name>.hfov_deg (0 = none), for cameras
    # without camera_info: a centred pinhole K

    def __post_init__(self) -> None:
        modes = tuple(m.value for m in PoseConditioning)
        if self.pose_conditioning not in modes:
            raise ConfigError(f"pose_conditioning must be one of {modes}, got {self.pose_conditioning!r}")
        if len(self.frame_id_overrides) != len(self.camera_names):
            raise ValueError(f"{len(self.frame_id_overrides)} frame_id overrides for cameras {self.camera_names}")
        for camera, hfov in zip(self.camera_names, self.hfov_deg, strict=False):
            if hfov and not 0 < hfov < 180:
                raise ConfigError(f"cameras.{camera}.hfov_deg must be in (0, 180) degrees (0 = none), got {hfov}")

    def subset(self, cameras: list[int]) -> CoreConfig:
        """The config of only ``cameras`` (indices into ``camera_names``)."""
        def pick(values: list[Any]) -> list[Any]:
            return [values[i] for i in cameras] if values else []

        return dataclasses.replace(self, camera_names=pick(self.camera_names),
                                   frame_id_overrides=pick(self.frame_id_overrides), hfov_deg=pick(self.hfov_deg))


@dataclass(frozen=True)
class DepthConfig:
    """Every setting of the node, validated; built by ``from_getter``. ``value(name)`` reads any parameter."""

    values: Mapping[str, Any]  # every parameter of the table (per-camera ones for ``cameras``), normalised
    cameras: tuple[str, ...]
    ref: int  # index of the pinned reference camera
    out: OutputConfig
    nav: NavConfig
    scale_filter: ScaleFilterConfig
    temporal: TemporalConfig | None = None  # temporal.*; None: temporal.keyframes 0
    range_sources: tuple[RangeSource, ...] = ()  # metric.range_topics; () = no range sensor
    range_fit: RangeFitConfig = RangeFitConfig()

    @classmethod
    def from_getter(cls, get: Getter) -> DepthConfig:
        """Read and validate every parameter through ``get``; ConfigError naming each bad value and the fix."""
        cameras = camera_names(get("camera_names"))
        table = param_table(list(cameras))
        values = {name: normalized(name, get(name)) for name in table}
        problems = check_values(values, list(cameras))
        ref_name = values["reference_camera"] or cameras[0]
        if ref_name not in cameras:
            problems.append(f"reference_camera {ref_name!r} is not in camera_names {list(cameras)}")
        overrides = [values[camera_param(c, "frame_id")] for c in cameras]
        if all(overrides):  # every frame known before the first image: check fused_frame now
            problems.append(fused_frame_problem(values["fused_frame"], overrides, values["tf.suffix"]))
            if values["tf.suffix"]:  # "" is named by check_values
                problems.append(tf_suffix_problem(values["tf.suffix"], overrides))
        if values["temporal.keyframes"] and values["pose_conditioning"] in ("params", "tf_static"):
            problems.append(f"temporal.keyframes = {values['temporal.keyframes']} joins keyframes of unknown pose "
                            f"to every forward, so no set is pose-conditioned: pose_conditioning "
                            f"{values['pose_conditioning']!r} cannot hold; set it to auto or off, or "
                            "temporal.keyframes 0")
        if values["temporal.keyframes"] and values["backend"] == "triton":
            problems.append(f"temporal.keyframes = {values['temporal.keyframes']} with backend triton: the window "
                            "sends N, N + 1, ... N + K views as keyframes join, a Triton server answers only the view "
                            "counts it was started with (which the node cannot check at start-up), and a refused set "
                            "never adds a keyframe, so every set after the first would fail; run the window on a local "
                            "backend (onnxruntime, tensorrt, torch), or set temporal.keyframes 0 with triton")
        try:
            ranges = range_config(values.__getitem__)
        except ConfigError as exc:
            problems.append(str(exc))
        if any(problems):
            raise ConfigError("; ".join(p for p in problems if p))
        get = values.__getitem__
        return cls(values, cameras, cameras.index(ref_name), output_config(get), nav_config(get),
                   scale_filter_config(get), temporal_config(get), *ranges)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> DepthConfig:
        """From a dict of given values (a parameter file, ``-p``); every other parameter at its default."""
        defaults = {p.name: p.default for p in NODE_PARAMS}
        field_defaults = {p.name: (None if p.default == [] else p.default) for p in CAMERA_PARAMS}

        def get(name: str) -> Any:
            if name in values:
                return values[name]
            return defaults.get(name, field_defaults.get(name.rsplit(".", 1)[-1]))

        return cls.from_getter(get)

    def value(self, name: str) -> Any:
        """The value of parameter ``name`` (KeyError for a name the table does not have)."""
        return self.values[name]

    def with_values(self, changes: Mapping[str, Any]) -> DepthConfig:
        """A copy with ``changes`` applied and validated again (a runtime parameter set).

        The odometry's default child keeps the start-up ``tf.suffix`` (``OutputConfig.odom_child``): a chain's
        child frame is never renamed mid-run.
        """
        merged = {**self.values, **changes}
        new = DepthConfig.from_getter(lambda name: merged.get(name))
        return dataclasses.replace(new, out=dataclasses.replace(new.out, odom_child_suffix=self.out.odom_suffix))

    def odom_child_renamed(self, changes: Mapping[str, Any]) -> str:
        """'' or the log line for a runtime ``tf.suffix`` that leaves the odometry's child frame as it was."""
        if "tf.suffix" not in changes or not self.temporal or self.out.odom_child_frame:
            return ""
        pinned = self.out.odom_suffix
        if changes["tf.suffix"] == pinned:
            return ""
        return (f"tf.suffix {changes['tf.suffix']!r} renames the cameras' estimated frames; the odometry's child "
                f"frame stays <reference frame>{pinned} (fixed at start-up, the chain goes on); restart, or set "
                "temporal.child_frame, to name it otherwise")

    @property
    def reference_camera(self) -> str:
        """The pinned reference camera's name."""
        return self.cameras[self.ref]

    def camera(self, camera: str, field_name: str) -> Any:
        """A per-camera parameter: ``cameras.<camera>.<field_name>``."""
        return self.values[camera_param(camera, field_name)]

    def topics(self, camera: str) -> tuple[str, str]:
        """(image topic, camera_info topic) of ``camera``, relative as the node subscribes to them."""
        return (self.camera(camera, "image_topic") or f"{camera}/image_raw",
                self.camera(camera, "camera_info_topic") or f"{camera}/camera_info")

    def known_poses(self) -> list[list[float]]:
        """Each camera's ``cameras.<name>.T_ref_cam`` ([] where not given)."""
        return [list(self.camera(c, "T_ref_cam") or []) for c in self.cameras]

    def core_config(self) -> CoreConfig:
        """The per-set policy's settings for the whole rig."""
        return CoreConfig(list(self.cameras), [self.camera(c, "frame_id") or "" for c in self.cameras],
                          self.values["pose_conditioning"], self.out, self.nav,
                          [float(self.camera(c, "hfov_deg") or 0.0) for c in self.cameras])


def camera_names(value: Any) -> tuple[str, ...]:
    """``camera_names`` checked: a non-empty list of unique names."""
    if (not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) and c for c in value)
            or len(set(value)) != len(value)):
        raise ConfigError(f"camera_names must be unique and non-empty, got {value!r}")
    return tuple(value)
