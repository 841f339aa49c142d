"""A range sensor's message (PointCloud2, LaserScan, depth Image + CameraInfo) -> points in metres, its frame."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2

from da3_ros.core import geometry as geo
from da3_ros.core.range_scale import RangeKind
from da3_ros.ros.conversions.camera_info import camera_info_to_K
from da3_ros.ros.conversions.clouds import pointcloud2_to_xyz_rgb
from da3_ros.ros.conversions.images import image_to_array
from da3_ros.ros.conversions.stamps import ConversionError


def scan_points(msg: LaserScan) -> np.ndarray:
    """A LaserScan's returns as (M, 3) points in its frame (z = 0); out of [range_min, range_max] dropped (REP 117)."""
    r = np.asarray(msg.ranges, np.float64)
    angle = msg.angle_min + msg.angle_increment * np.arange(len(r))
    ok = np.isfinite(r) & (r >= msg.range_min) & (r <= msg.range_max)
    return np.stack([r[ok] * np.cos(angle[ok]), r[ok] * np.sin(angle[ok]), np.zeros(int(ok.sum()))], axis=1)


def depth_image_points(msg: Image, info: CameraInfo | None) -> np.ndarray:
    """A depth image (16UC1 mm, 32FC1 m; 0 / NaN / Inf = no return) as (M, 3) points in its optical frame."""
    if info is None:
        raise ConversionError(f"depth image on frame {msg.header.frame_id!r} without its camera_info yet")
    K, hw = camera_info_to_K(info)
    if hw != (msg.height, msg.width):
        raise ConversionError(f"depth image is {msg.height}x{msg.width}, its camera_info {hw[0]}x{hw[1]}")
    if msg.encoding not in ("16UC1", "32FC1"):
        raise ConversionError(f"depth image encoding {msg.encoding!r}: expected 16UC1 (mm) or 32FC1 (m)")
    depth = image_to_array(msg).astype(np.float64)
    if msg.encoding == "16UC1":
        depth /= 1000.0
    ok = np.isfinite(depth) & (depth > 0)
    points, _ = geo.backproject(depth, K, ok)
    return points


def range_points(kind: RangeKind, msg: PointCloud2 | LaserScan | Image,
                 info: CameraInfo | None = None) -> np.ndarray:
    """The message's returns as (M, 3) float32 metres in its header's frame; ConversionError if unreadable.

    float32 is the sensors' own precision (PointCloud2 x y z are FLOAT32 in practice) and what the fit computes in.
    """
    if kind is RangeKind.CLOUD and isinstance(msg, PointCloud2):
        points = pointcloud2_to_xyz_rgb(msg)[0]
        finite = np.isfinite(points).all(axis=1)
        return points if finite.all() else points[finite]
    if kind is RangeKind.SCAN and isinstance(msg, LaserScan):
        return scan_points(msg).astype(np.float32)
    if kind is RangeKind.DEPTH and isinstance(msg, Image):
        return depth_image_points(msg, info).astype(np.float32)
    raise ConversionError(f"a {type(msg).__name__} on a range topic of kind {kind.value}")


RANGE_TYPES = {RangeKind.CLOUD: PointCloud2, RangeKind.SCAN: LaserScan, RangeKind.DEPTH: Image}
