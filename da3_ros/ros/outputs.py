"""Messages of one processed set, built lazily: only what somebody subscribes to is computed.

Knows ROS message types (through conversions), never rclpy. Per camera: depth (32FC1, NaN invalid, +Inf sky),
depth in mm (16UC1), confidence, sky mask, camera_info matching the depth, cloud in the camera's optical
frame. For the set: a fused cloud, TF of the estimated poses and one MultiViewDepth message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from std_msgs.msg import Header

from da3_ros.ros import conversions as conv
from da3_ros.core import geometry as geo
from da3_ros.core import navigation as nav
from da3_ros.core.config import NavConfig, OutputConfig
from da3_ros.core.errors import ConfigError
from da3_ros.core.rig import RigResult

@dataclass(frozen=True)
class NavInputs:
    """What the navigation outputs of a set need: the target frame and each camera's pose in it."""

    target_frame: str
    T_target_cam: np.ndarray | None  # (N, 4, 4) from /tf_static; None when a link is missing
    missing: str = ""  # the error when T_target_cam is None
    obstacles: nav.ObstacleConfig = nav.ObstacleConfig()
    scan: nav.ScanConfig = nav.ScanConfig()


def nav_inputs(cfg: NavConfig, static_tf, frame_ids: list[str]) -> NavInputs:
    """Each camera's pose in the target frame from a StaticTfBuffer; a missing link is named, not raised."""
    obstacles, scan, target = cfg.obstacles, cfg.scan, cfg.target_frame
    Ts = [static_tf.lookup(target, f) for f in frame_ids]
    missing = [f for f, T in zip(frame_ids, Ts) if T is None]
    if missing:
        return NavInputs(target, None, f"no /tf_static path from {target!r} to camera frame(s) {missing}: "
                         f"publish the robot's static transforms (robot_state_publisher) or set nav.target_frame",
                         obstacles, scan)
    return NavInputs(target, np.stack(Ts), "", obstacles, scan)


@dataclass
class SetOutputs:
    """Everything publishable for one set. ``headers`` are the source images' headers, in camera order."""

    result: RigResult
    camera_names: list[str]
    frame_ids: list[str]
    headers: list[Header]
    cfg: OutputConfig
    model_label: str = ""
    distortion: list[tuple[str, list[float]] | None] = field(default_factory=list)  # per camera, from camera_info
    nav_inputs: NavInputs | None = None
    reference_camera: str = ""  # the rig's pinned reference camera; "" = this set's own reference view
    _clouds: dict = field(default_factory=dict, repr=False)

    @property
    def pred(self):
        return self.result.prediction

    @property
    def ref(self) -> int:
        return self.result.ref_index

    @property
    def reference_in_set(self) -> bool:
        """Whether the rig's reference camera is in this set (not while it is silent: its pose is unmeasured)."""
        return not self.reference_camera or self.reference_camera in self.camera_names

    # --- the rules: what a set may not publish, and why (counter, text) --------------------------------
    def tf_withheld(self) -> tuple[str, str] | None:
        """Why this set's TF is not published, or None. Never a pose that is not true in the pinned frame."""
        if self.result.T_ref_cam is None or self.cfg.tf_mode == "off":
            return None
        if not self.reference_in_set:
            return "reference_silent", self._reference_silent_text()
        if self.cfg.tf_mode == "camera_frames" and not self.pred.is_metric:
            return "tf_not_metric", ("tf.mode camera_frames moves the cameras' own frames, which are in metres, "
                                     "but this set's depth is relative (is_metric false): TF skipped; use "
                                     "estimated_children, or a metric model, pair or calibrated rig")
        return None

    def fused_withheld(self) -> tuple[str, str] | None:
        """Why this set's fused cloud is not published, or None."""
        if self.result.T_ref_cam is not None and not self.reference_in_set:
            return "reference_silent", self._reference_silent_text()
        return None

    def nav_withheld(self) -> tuple[str, str] | None:
        """Why this set's points_obstacles / scan are not published, or None: they need metres."""
        if not self.pred.is_metric:
            return "nav_not_metric", ("points_obstacles / scan need metres, but this set's depth is relative "
                                      "(is_metric false): not published; use a metric model, a metric pair, a "
                                      "calibrated rig, or give every camera camera_info")
        return None

    def _reference_silent_text(self) -> str:
        return (f"the reference camera {self.reference_camera!r} is not in this set (silent): the poses of "
                f"{self.camera_names} in its frame are not measured, so TF and points_fused are skipped")

    def _header(self, i: int, frame_id: str | None = None) -> Header:
        h = self.headers[i]
        return Header(stamp=h.stamp, frame_id=self.frame_ids[i] if frame_id is None else frame_id)

    # --- per camera ------------------------------------------------------------------------------------
    @cached_property
    def depth_arrays(self) -> np.ndarray:
        """(N, H, W) float32 as published: NaN where invalid, +Inf where sky (REP 118) if so configured."""
        d = self.pred.depth.astype(np.float32, copy=True)
        d[~(np.isfinite(d) & (d > 0))] = np.nan
        if self.cfg.sky_as_inf and self.pred.sky_mask is not None:
            d[self.pred.sky_mask] = np.inf
        return d

    def depth(self, i: int):
        return conv.depth_to_image(self.depth_arrays[i], self._header(i))

    def depth_mm(self, i: int):
        return conv.depth_to_image_16uc1_mm(self.depth_arrays[i], self._header(i))

    def confidence(self, i: int):
        if self.pred.confidence is None:
            return None
        return conv.array_to_image(self.pred.confidence[i].astype(np.float32), self._header(i), "32FC1")

    def sky(self, i: int):
        if self.pred.sky_mask is None:
            return None
        return conv.array_to_image(self.pred.sky_mask[i], self._header(i), "mono8")

    def camera_info(self, i: int):
        K = self.pred.K_of(i)
        if K is None:
            return None
        model, D = self.distortion[i] if i < len(self.distortion) and self.distortion[i] else ("plumb_bob", None)
        return conv.make_camera_info(K, self.pred.hw, self._header(i), D=D, distortion_model=model)

    def cloud_arrays(self, i: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None:
        """Filtered points (optical frame of camera i), their colours and confidences; None without K."""
        K = self.pred.K_of(i)
        if K is None:
            return None
        if i not in self._clouds:
            c = self.cfg
            mask = geo.valid_mask(
                self.pred.depth[i], self.pred.confidence[i] if self.pred.confidence is not None else None,
                self.pred.sky_mask[i] if (c.drop_sky and self.pred.sky_mask is not None) else None,
                min_confidence=c.min_confidence or None, min_depth=c.min_depth or None,
                max_depth=c.max_depth or None)
            pts, pix = geo.backproject(self.pred.depth[i], K, mask=mask, stride=c.stride)
            rgb = geo.sample_colors(self.pred.rgb_proc[i], pix) if self.pred.rgb_proc is not None else None
            conf = None if self.pred.confidence is None else self.pred.confidence[i][pix[:, 0], pix[:, 1]]
            self._clouds[i] = (pts, rgb, conf)
        return self._clouds[i]

    @property
    def clouds_built(self) -> int:
        """How many per-camera clouds this set back-projected (only those somebody asked for)."""
        return len(self._clouds)

    def points(self, i: int):
        arrays = self.cloud_arrays(i)
        if arrays is None:
            return None
        conf = arrays[2] if self.cfg.confidence_field else None
        return conv.xyz_rgb_to_pointcloud2(arrays[0], self._header(i), arrays[1], conf)

    # --- the set ---------------------------------------------------------------------------------------
    def fused_frame_and_T(self) -> tuple[str, np.ndarray] | None:
        """The fused cloud's frame and T_fused_ref; None when the poses are unknown (or withheld)."""
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
        clouds = [self.cloud_arrays(i) for i in range(self.pred.num_views)]
        if ft is None or any(c is None for c in clouds):
            return None
        frame, T_fused_ref = ft
        T_fused_cam = T_fused_ref[None] @ self.result.T_ref_cam
        colors = None if any(c[1] is None for c in clouds) else [c[1] for c in clouds]
        pts, rgb = geo.fuse_views([c[0] for c in clouds], T_fused_cam, colors)
        conf = np.concatenate([c[2] for c in clouds]) if all(c[2] is not None for c in clouds) else None
        return frame, pts, rgb, conf

    def fused(self):
        arrays = self.fused_arrays()
        if arrays is None:
            return None
        frame, pts, rgb, conf = arrays
        return conv.xyz_rgb_to_pointcloud2(pts, self._header(self.ref, frame), rgb,
                                           conf if self.cfg.confidence_field else None)

    # --- navigation ------------------------------------------------------------------------------------
    @cached_property
    def nav_points(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Every cloud point of the set (all views) in the navigation target frame, and their confidences.

        Raises ValueError naming the missing /tf_static link or the missing intrinsics.
        """
        if self.nav_inputs is None:
            raise ValueError("navigation outputs are not configured")
        withheld = self.nav_withheld()
        if withheld is not None:
            raise ValueError(withheld[1])
        n = self.nav_inputs
        if n.T_target_cam is None:
            raise ValueError(n.missing)
        clouds = [self.cloud_arrays(i) for i in range(self.pred.num_views)]
        if any(c is None for c in clouds):
            raise ValueError("navigation outputs need intrinsics (camera_info or a model that estimates them)")
        xyz = np.concatenate([nav.transform_points(n.T_target_cam[i], c[0]) for i, c in enumerate(clouds)])
        conf = None if any(c[2] is None for c in clouds) else np.concatenate([c[2] for c in clouds])
        return xyz, conf

    @cached_property
    def obstacle_arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Obstacle points in the navigation target frame (all views) and their confidences.

        Raises ValueError as ``nav_points`` does.
        """
        xyz, conf = self.nav_points
        return nav.obstacle_cloud(xyz, self.nav_inputs.obstacles, conf)

    def obstacles(self):
        """``points_obstacles``: x y z (+ confidence) in the target frame, stamped with the reference image."""
        xyz, conf = self.obstacle_arrays
        header = self._header(self.ref, self.nav_inputs.target_frame)
        return conv.xyz_rgb_to_pointcloud2(xyz, header, None, conf if self.cfg.confidence_field else None)

    def scan(self):
        """``scan``: per ray the nearest point in the scan's own height band, in the target frame.

        From the points before the obstacle cloud's thinning; ray i at angle_min + i * angle_increment, as binned.
        """
        c = self.nav_inputs.scan
        ranges = nav.laser_scan_ranges(self.nav_points[0], c)
        return conv.laser_scan(ranges, self._header(self.ref, self.nav_inputs.target_frame), c.angle_min,
                               c.angle_increment, c.range_min, c.range_max)

    def transforms(self) -> list:
        """TransformStamped of each camera's estimated pose, parented to the reference camera's frame."""
        T = self.result.T_ref_cam
        if T is None or self.cfg.tf_mode == "off" or self.tf_withheld() is not None:
            return []
        parent, stamp = self.frame_ids[self.ref], self.headers[self.ref].stamp
        if self.cfg.tf_mode == "camera_frames":
            return [conv.transform_stamped(T[i], parent, self.frame_ids[i], stamp)
                    for i in range(len(T)) if i != self.ref]
        return [conv.transform_stamped(T[i], parent, self.frame_ids[i] + self.cfg.tf_suffix, stamp)
                for i in range(len(T))]

    def multiview(self):
        from da3_ros.msg import DepthView, MultiViewDepth

        views = []
        for i, name in enumerate(self.camera_names):
            v = DepthView(camera_name=name, depth=self.depth(i),
                          depth_scale=float(self.pred.depth_scale[i]) if self.pred.depth_scale is not None else 1.0)
            conf = self.confidence(i)
            if conf is not None:
                v.confidence = conf
            info = self.camera_info(i)
            if info is not None:
                v.camera_info = info
            if self.result.T_ref_cam is not None and self.reference_in_set:
                v.pose, v.has_pose = conv.T_to_pose(self.result.T_ref_cam[i]), True
            views.append(v)
        return MultiViewDepth(header=self._header(self.ref), model=self.model_label, is_metric=self.pred.is_metric,
                              scale_source=self.pred.scale_source, scale_raw=float(self.pred.scale_raw),
                              scale=float(self.pred.scale),
                              reference_camera=self.reference_camera or self.camera_names[self.ref], views=views)
