"""The messages of one processed set, built lazily from its ``SetResult`` (core.results) by the emitter.

Per camera: depth (32FC1, NaN invalid, +Inf sky), depth in mm (16UC1), both also as compressedDepth, confidence, sky
mask, camera_info matching the depth, cloud in the camera's optical frame. For the set: a fused cloud, the
navigation cloud and scan, TF of the estimated poses and one MultiViewDepth message. Every message carries its
source image's stamp; set-wide ones the reference camera's. Knows message types, never rclpy; what is withheld is
decided by ``SetResult`` (its rules), not here.
"""
from __future__ import annotations

import math

import numpy as np
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, LaserScan, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from da3_ros.core.results import SetResult
from da3_ros.ros import conversions as conv

TWIST_UNKNOWN_VAR = 1e9  # the odometry's twist is not estimated: a variance no filter trusts


class SetMessages:
    """Message builders over one ``SetResult``; a builder returns None where the set has no such output."""

    def __init__(self, result: SetResult):
        self.result = result

    def _header(self, i: int, frame_id: str | None = None) -> Header:
        r = self.result
        return Header(stamp=conv.ns_to_stamp(r.stamps_ns[i]), frame_id=r.frame_ids[i] if frame_id is None else frame_id)

    # --- per camera ------------------------------------------------------------------------------------
    def depth(self, i: int) -> Image:
        """``<camera>/depth/image``: 32FC1 in the depth's units."""
        return conv.depth_to_image(self.result.depth_arrays[i], self._header(i))

    def depth_mm(self, i: int) -> Image:
        """``<camera>/depth/image_mm``: 16UC1 millimetres (0 = no reading)."""
        return conv.depth_to_image_16uc1_mm(self.result.depth_arrays[i], self._header(i))

    def depth_compressed(self, i: int) -> CompressedImage:
        """``<camera>/depth/image/compressedDepth``: image_transport's 32FC1 compressedDepth (inverse depth PNG)."""
        return conv.depth_to_compressed_depth(self.result.depth_arrays[i], self._header(i))

    def depth_mm_compressed(self, i: int) -> CompressedImage:
        """``<camera>/depth/image_mm/compressedDepth``: image_transport's 16UC1 compressedDepth (lossless PNG)."""
        return conv.mm_to_compressed_depth(conv.depth_to_mm(self.result.depth_arrays[i]), self._header(i))

    def confidence(self, i: int) -> Image | None:
        """``<camera>/confidence/image``: 32FC1, None for a model without confidence."""
        conf = self.result.pred.confidence
        return None if conf is None else conv.array_to_image(conf[i].astype(np.float32), self._header(i), "32FC1")

    def sky(self, i: int) -> Image | None:
        """``<camera>/sky/mask``: mono8, None for a model without sky."""
        sky = self.result.pred.sky_mask
        return None if sky is None else conv.array_to_image(sky[i], self._header(i), "mono8")

    def camera_info(self, i: int) -> CameraInfo | None:
        """``<camera>/depth/camera_info`` at the depth's resolution; None without intrinsics."""
        r = self.result
        K = r.pred.K_of(i)
        if K is None:
            return None
        model, D = r.distortion[i] if i < len(r.distortion) and r.distortion[i] else ("plumb_bob", None)
        return conv.make_camera_info(K, r.pred.hw, self._header(i), D=D, distortion_model=model)

    def points(self, i: int) -> PointCloud2 | None:
        """``<camera>/points``: x y z rgb (+ confidence) in the camera's optical frame; None without K."""
        arrays = self.result.cloud_arrays(i)
        if arrays is None:
            return None
        conf = arrays[2] if self.result.cfg.confidence_field else None
        return conv.xyz_rgb_to_pointcloud2(arrays[0], self._header(i), arrays[1], conf)

    # --- the set ---------------------------------------------------------------------------------------
    def fused(self) -> PointCloud2 | None:
        """``points_fused`` in ``fused_frame``; None without poses or intrinsics (ConfigError: bad frame)."""
        arrays = self.result.fused_arrays()
        if arrays is None:
            return None
        frame, pts, rgb, conf = arrays
        return conv.xyz_rgb_to_pointcloud2(pts, self._header(self.result.ref, frame), rgb,
                                           conf if self.result.cfg.confidence_field else None)

    def obstacles(self) -> PointCloud2:
        """``points_obstacles``: x y z (+ confidence) in the target frame (ValueError: see SetResult)."""
        r = self.result
        xyz, conf = r.obstacle_arrays
        assert r.nav_inputs is not None  # obstacle_arrays raised otherwise
        return conv.xyz_rgb_to_pointcloud2(xyz, self._header(r.ref, r.nav_inputs.target_frame), None,
                                           conf if r.cfg.confidence_field else None)

    def scan(self) -> LaserScan:
        """``scan`` in the target frame (ValueError: see SetResult.nav_points)."""
        r = self.result
        ranges = r.scan_ranges()
        assert r.nav_inputs is not None  # scan_ranges raised otherwise
        c = r.nav_inputs.scan
        return conv.laser_scan(ranges, self._header(r.ref, r.nav_inputs.target_frame), c.angle_min,
                               c.angle_increment, c.range_min, c.range_max)

    def tf(self) -> TFMessage | None:
        """``/tf``: each estimated pose at the reference image's stamp; None when there is none to publish."""
        r = self.result
        stamp = conv.ns_to_stamp(r.stamps_ns[r.ref])
        transforms = [conv.transform_stamped(t.T_parent_child, t.parent, t.child, stamp) for t in r.transforms()]
        return conv.tf_message(transforms) if transforms else None

    def odometry(self) -> Odometry | None:
        """``odometry``: the reference camera's chained pose and its covariance; None without a temporal window.

        The twist is not estimated: zero, with a huge covariance on its diagonal (unknown: fuse the pose only,
        see the README).
        """
        odom = self.result.odometry()
        if odom is None:
            return None
        msg = Odometry(child_frame_id=odom.child)
        msg.header.stamp, msg.header.frame_id = conv.ns_to_stamp(odom.stamp_ns), odom.frame
        msg.pose.pose = conv.T_to_pose(odom.T_odom_cam)
        msg.pose.covariance = [float(v) for v in odom.covariance.reshape(-1)]
        msg.twist.covariance = [TWIST_UNKNOWN_VAR if i % 7 == 0 else 0.0 for i in range(36)]
        return msg

    def multiview(self):
        """``multiview_depth``: every view's depth, confidence, camera_info and (when true) pose."""
        from da3_ros.msg import DepthView, MultiViewDepth

        r, views = self.result, []
        for i, name in enumerate(r.camera_names):
            v = DepthView(camera_name=name, depth=self.depth(i),
                          depth_scale=float(r.pred.depth_scale[i]) if r.pred.depth_scale is not None else 1.0)
            conf, info, T = self.confidence(i), self.camera_info(i), r.view_pose(i)
            if conf is not None:
                v.confidence = conf
            if info is not None:
                v.camera_info = info
            if T is not None:
                v.pose, v.has_pose = conv.T_to_pose(T), True
            views.append(v)
        return MultiViewDepth(header=self._header(r.ref), model=r.model_label, is_metric=r.pred.is_metric,
                              scale_source=r.pred.scale_source, scale_raw=float(r.pred.scale_raw),
                              scale=float(r.pred.scale),
                              reference_camera=r.reference_camera or r.camera_names[r.ref], views=views,
                              window_views=r.result.window_views or len(views), **_temporal_fields(r))


def _temporal_fields(r: SetResult) -> dict[str, object]:
    """MultiViewDepth's temporal fields of a set (NaN and zeros without a window)."""
    step = r.result.temporal
    if step is None:
        return {"scale_drift": math.nan, "alignment_residual": math.nan}
    chain, fit = step.chain, step.chain.alignment
    return {"keyframes": len(step.layout.keyframe_stamps_ns), "chain_id": chain.chain_id,
            "chain_restart": "" if chain.restart is None else chain.restart.value,
            "scale_drift": float(chain.scale_drift),
            "alignment_residual": math.nan if fit is None else float(fit.residual_rel)}
