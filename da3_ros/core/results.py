"""What one processed set yields, as arrays, and the rules of what it may publish. ROS-free.

Built lazily: only what somebody asks for is computed. Per camera: depth as published (NaN invalid, +Inf
sky), confidence, sky mask, intrinsics, a filtered cloud in the camera's optical frame. For the set: the
fused cloud, the navigation points (obstacles, scan ranges), the estimated poses as (parent, child, T). The
rules live here, once: no TF or fused cloud while the pinned reference camera is silent, no navigation
output and no ``camera_frames`` TF from relative depth. ``da3_ros.ros.emit`` turns these into messages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from da3_ros.core import geometry as geo
from da3_ros.core import navigation as nav
from da3_ros.core.config import NavConfig, OutputConfig
from da3_ros.core.errors import ConfigError
from da3_ros.core.params import TfMode, tf_suffix_problem
from da3_ros.core.prediction import Prediction
from da3_ros.core.rig import RigResult
from da3_ros.core.static_tf import StaticTfBuffer

Cloud = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # points (M, 3), colours (M, 3) uint8, confidences
Withheld = tuple[str, str]  # (counter, text): why an output is not published, and the fix


@dataclass(frozen=True)
class NavInputs:
    """What the navigation outputs of a set need: the target frame and each camera's pose in it."""

    target_frame: str
    T_target_cam: np.ndarray | None  # (N, 4, 4) from /tf_static; None when a link is missing
    missing: str = ""  # the error when T_target_cam is None
    obstacles: nav.ObstacleConfig = nav.ObstacleConfig()
    scan: nav.ScanConfig = nav.ScanConfig()


def nav_inputs(cfg: NavConfig, static_tf: StaticTfBuffer, frame_ids: list[str]) -> NavInputs:
    """Each camera's pose in the target frame from a StaticTfBuffer; a missing link is named, not raised."""
    obstacles, scan, target = cfg.obstacles, cfg.scan, cfg.target_frame
    Ts = [static_tf.lookup(target, f) for f in frame_ids]
    missing = [f for f, T in zip(frame_ids, Ts) if T is None]
    if missing:
        return NavInputs(target, None, f"no /tf_static path from {target!r} to camera frame(s) {missing}: "
                         f"publish the robot's static transforms (robot_state_publisher) or set nav.target_frame",
                         obstacles, scan)
    return NavInputs(target, np.stack([T for T in Ts if T is not None]), "", obstacles, scan)


@dataclass(frozen=True)
class Transform:
    """One estimated pose for TF: ``T_parent_child`` (4x4, depth units) at the set's reference stamp."""

    parent: str
    child: str
    T_parent_child: np.ndarray


@dataclass(frozen=True)
class OdometryArrays:
    """The reference camera's pose on the window chain (temporal.keyframes > 0) at the set's reference stamp."""

    frame: str  # temporal.odom_frame
    child: str  # temporal.child_frame, else the reference camera's frame + tf.suffix
    stamp_ns: int
    T_odom_cam: np.ndarray  # (4, 4) float64, chain units (metres when is_metric)
    covariance: np.ndarray  # (6, 6) float64, x y z rx ry rz (ROS order), chain units^2 and rad^2
    is_metric: bool
    restart: str  # why this set started a new chain ("" : it continued one)


@dataclass
class SetResult:
    """Everything publishable for one set, as arrays; per-camera lists are in the set's camera order."""

    result: RigResult
    camera_names: list[str]
    frame_ids: list[str]
    stamps_ns: list[int]  # each source image's stamp
    cfg: OutputConfig
    model_label: str = ""
    distortion: list[tuple[str, list[float]] | None] = field(default_factory=list)  # per camera, from camera_info
    nav_inputs: NavInputs | None = None
    reference_camera: str = ""  # the rig's pinned reference camera; "" = this set's own reference view
    _clouds: dict[int, Cloud] = field(default_factory=dict, repr=False)

    @property
    def pred(self) -> Prediction:
        """The set's prediction, in camera order."""
        return self.result.prediction

    @property
    def ref(self) -> int:
        """Index of this set's reference view (the pinned camera when present)."""
        return self.result.ref_index

    @property
    def reference_in_set(self) -> bool:
        """Whether the rig's reference camera is in this set (not while it is silent: its pose is unmeasured)."""
        return not self.reference_camera or self.reference_camera in self.camera_names

    # --- the rules: what a set may not publish, and why (counter, text) --------------------------------
    def tf_withheld(self) -> Withheld | None:
        """Why this set's TF is not published, or None. Never a pose that is not true in the pinned frame."""
        if self.result.T_ref_cam is None or self.cfg.tf_mode == TfMode.OFF.value:
            return None
        if not self.reference_in_set:
            return "reference_silent", self._reference_silent_text()
        if self.cfg.tf_mode == TfMode.CAMERA_FRAMES.value and not self.pred.is_metric:
            return "tf_not_metric", ("tf.mode camera_frames moves the cameras' own frames, which are in metres, "
                                     "but this set's depth is relative (is_metric false): TF skipped; use "
                                     "estimated_children, or a metric model, pair or calibrated rig")
        if self.cfg.tf_mode == TfMode.ESTIMATED_CHILDREN.value and (
                clash := tf_suffix_problem(self.cfg.tf_suffix, self.frame_ids)):  # frames from the image headers
            return "tf_second_parent", f"TF skipped: {clash}"
        return None

    def fused_withheld(self) -> Withheld | None:
        """Why this set's fused cloud is not published, or None."""
        if self.result.T_ref_cam is not None and not self.reference_in_set:
            return "reference_silent", self._reference_silent_text()
        return None

    def nav_withheld(self) -> Withheld | None:
        """Why this set's points_obstacles / scan are not published, or None: they need metres."""
        if not self.pred.is_metric:
            return "nav_not_metric", ("points_obstacles / scan need metres, but this set's depth is relative "
                                      "(is_metric false): not published; use a metric model, a metric pair, a "
                                      "calibrated rig, or give every camera camera_info")
        return None

    def _reference_silent_text(self) -> str:
        return (f"the reference camera {self.reference_camera!r} is not in this set (silent): the poses of "
                f"{self.camera_names} in its frame are not measured, so TF and points_fused are skipped")

    # --- per camera ------------------------------------------------------------------------------------
    @cached_property
    def depth_arrays(self) -> np.ndarray:
        """(N, H, W) float32 as published: NaN where invalid, +Inf where sky (REP 118) if so configured."""
        d = self.pred.depth.astype(np.float32, copy=True)
        d[~geo.valid_depth(d)] = np.nan
        if self.cfg.sky_as_inf and self.pred.sky_mask is not None:
            d[self.pred.sky_mask] = np.inf
        return d

    def view_pose(self, i: int) -> np.ndarray | None:
        """T_ref_cam of camera i, when the poses are known and true in the pinned frame (reference present)."""
        if self.result.T_ref_cam is None or not self.reference_in_set:
            return None
        return self.result.T_ref_cam[i]

    def cloud_arrays(self, i: int) -> Cloud | None:
        """Filtered points (optical frame of camera i), their colours and confidences; None without K."""
        K = self.pred.K_of(i)
        if K is None:
            return None
        if i not in self._clouds:
            c, pred = self.cfg, self.pred
            mask = geo.valid_mask(
                pred.depth[i], pred.confidence[i] if pred.confidence is not None else None,
                pred.sky_mask[i] if (c.drop_sky and pred.sky_mask is not None) else None,
                min_confidence=c.min_confidence or None, min_depth=c.min_depth or None,
                max_depth=c.max_depth or None)
            pts, pix = geo.backproject(pred.depth[i], K, mask=mask, stride=c.stride)
            rgb = geo.sample_colors(pred.rgb_proc[i], pix) if pred.rgb_proc is not None else None
            conf = None if pred.confidence is None else pred.confidence[i][pix[:, 0], pix[:, 1]]
            self._clouds[i] = (pts, rgb, conf)
        return self._clouds[i]

    @property
    def clouds_built(self) -> int:
        """How many per-camera clouds this set back-projected (only those somebody asked for)."""
        return len(self._clouds)

    # --- the set ---------------------------------------------------------------------------------------
    def fused_frame_and_T(self) -> tuple[str, np.ndarray] | None:
        """The fused cloud's frame and T_fused_ref; None when the poses are unknown (or withheld).

        Raises ConfigError when ``fused_frame`` names no camera frame of this set.
        """
        T = self.result.T_ref_cam
        if T is None or self.fused_withheld() is not None:
            return None
        target = self.cfg.fused_frame or self.frame_ids[self.ref]
        for j, frame in enumerate(self.frame_ids):
            if target in (frame, frame + self.cfg.tf_suffix):
                return target, geo.invert_T(T[j])
        raise ConfigError(f"fused_frame {target!r} is not a camera frame of this rig: {self.frame_ids}")

    def fused_arrays(self) -> tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None] | None:
        """The fused cloud as arrays: (frame, points (M, 3), colours (M, 3) uint8, confidences (M,)).

        None without poses or intrinsics. Confidences come back whatever cloud.confidence_field says.
        """
        ft = self.fused_frame_and_T()
        clouds = self._all_clouds()
        if ft is None or clouds is None or self.result.T_ref_cam is None:
            return None
        frame, T_fused_ref = ft
        T_fused_cam = T_fused_ref[None] @ self.result.T_ref_cam
        colors = [c[1] for c in clouds if c[1] is not None]
        pts, rgb = geo.fuse_views([c[0] for c in clouds], T_fused_cam, colors if len(colors) == len(clouds) else None)
        confs = [c[2] for c in clouds if c[2] is not None]
        conf = np.concatenate(confs) if len(confs) == len(clouds) else None
        return frame, pts, rgb, conf

    def _all_clouds(self) -> list[Cloud] | None:
        clouds = [self.cloud_arrays(i) for i in range(self.pred.num_views)]
        return None if any(c is None for c in clouds) else [c for c in clouds if c is not None]

    def transforms(self) -> list[Transform]:
        """The set's TF: the cameras' estimated poses and, with a temporal window, the odometry.

        Each camera's estimated pose is parented to the reference camera's frame (unless withheld); with
        ``temporal.publish_tf`` the odometry ``odom_frame -> child`` is added, and replaces the reference's own
        identity child when it is the same frame: one parent per frame.
        """
        rig = self._rig_transforms()
        odom = self.odometry()
        if odom is None or not self.cfg.odom_tf or self.odometry_tf_withheld() is not None:
            return rig
        return [t for t in rig if t.child != odom.child] + [Transform(odom.frame, odom.child, odom.T_odom_cam)]

    def _rig_transforms(self) -> list[Transform]:
        T = self.result.T_ref_cam
        if T is None or self.cfg.tf_mode == TfMode.OFF.value or self.tf_withheld() is not None:
            return []
        parent = self.frame_ids[self.ref]
        if self.cfg.tf_mode == TfMode.CAMERA_FRAMES.value:
            return [Transform(parent, self.frame_ids[i], T[i]) for i in range(len(T)) if i != self.ref]
        return [Transform(parent, self.frame_ids[i] + self.cfg.tf_suffix, T[i]) for i in range(len(T))]

    # --- the temporal window -----------------------------------------------------------------------------
    def odometry(self) -> OdometryArrays | None:
        """The reference camera's chained pose (``odometry``); None without a temporal window."""
        step = self.result.temporal
        if step is None or not self.reference_in_set:
            return None
        chain = step.chain
        child = self.cfg.odom_child(self.frame_ids[self.ref])
        return OdometryArrays(self.cfg.odom_frame, child, self.stamps_ns[self.ref], chain.T_chain_cam,
                              chain.covariance, chain.is_metric, "" if chain.restart is None else chain.restart.value)

    def odometry_withheld(self) -> Withheld | None:
        """Why ``odometry`` (nav_msgs/Odometry) is not published, or None: it needs a chain in metres."""
        odom = self.odometry()
        if odom is None or odom.is_metric or self.cfg.odom_relative:
            return None
        return "odom_not_metric", ("odometry needs metres, but this set's chain is relative (is_metric false: pose "
                                   "and covariance in the unit of the chain's first window): not published; use a "
                                   "metric model or pair, or opt in with temporal.publish_relative_odometry")

    def odometry_tf_withheld(self) -> Withheld | None:
        """Why the odometry TF is not published, or None: its child may have no other parent."""
        odom = self.odometry()
        if odom is None:
            return None
        others = {t.child for t in self._rig_transforms()} - {self.frame_ids[self.ref] + self.cfg.tf_suffix}
        if odom.child in others or odom.child in self.frame_ids or odom.frame in self.frame_ids + [odom.child]:
            return "tf_second_parent", (f"temporal TF {odom.frame} -> {odom.child} would give a frame of the rig "
                                        f"{self.frame_ids} a second parent: not published; set temporal.child_frame "
                                        "to a frame nothing else parents (default: the reference frame + tf.suffix)")
        return None

    # --- navigation ------------------------------------------------------------------------------------
    @cached_property
    def nav_points(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Every cloud point of the set (all views) in the navigation target frame, and their confidences.

        Raises ValueError naming the missing /tf_static link or the missing intrinsics.
        """
        n = self.nav_inputs
        if n is None:
            raise ValueError("navigation outputs are not configured")
        withheld = self.nav_withheld()
        if withheld is not None:
            raise ValueError(withheld[1])
        if n.T_target_cam is None:
            raise ValueError(n.missing)
        clouds = self._all_clouds()
        if clouds is None:
            raise ValueError("navigation outputs need intrinsics (camera_info or a model that estimates them)")
        xyz = np.concatenate([nav.transform_points(n.T_target_cam[i], c[0]) for i, c in enumerate(clouds)])
        confs = [c[2] for c in clouds if c[2] is not None]
        return xyz, np.concatenate(confs) if len(confs) == len(clouds) else None

    @cached_property
    def obstacle_arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Obstacle points in the navigation target frame (all views) and their confidences.

        Raises ValueError as ``nav_points`` does.
        """
        xyz, conf = self.nav_points
        assert self.nav_inputs is not None  # nav_points raised otherwise
        return nav.obstacle_cloud(xyz, self.nav_inputs.obstacles, conf)

    def scan_ranges(self) -> np.ndarray:
        """Per ray the nearest point in the scan's own height band, in the target frame (metres; +Inf none).

        From the points before the obstacle cloud's thinning; ray i at angle_min + i * angle_increment, as binned.
        Raises ValueError as ``nav_points`` does.
        """
        xyz = self.nav_points[0]
        assert self.nav_inputs is not None  # nav_points raised otherwise
        return nav.laser_scan_ranges(xyz, self.nav_inputs.scan)
