"""ROS 2 messages <-> numpy, one module per kind: stamps, images, compressedDepth, camera_info, clouds, transforms.

Only message classes are imported (no node APIs), and no sensor_msgs_py / cv_bridge. Message payloads are
always assigned as ``bytes``: rosidl copies a bytes object into its array in one memcpy, whereas a
memoryview or ndarray is walked element by element (~200 ms for a 1080p image). Received payloads are read
with ``np.frombuffer`` without a copy, so arrays returned here may share memory with ``msg.data``.
Outgoing multi-byte data is little-endian (``is_bigendian = False``); incoming data of either byte order is
returned in native order.
"""
from __future__ import annotations

from da3_ros.ros.conversions.stamps import (
    NS_PER_S, ConversionError, ns_to_stamp, stamp_cdr, stamp_ns_from_cdr, stamp_to_ns
)
from da3_ros.ros.conversions.images import (
    MAX_16UC1_M, array_to_image, compressed_to_image, depth_to_image, depth_to_image_16uc1_mm, depth_to_mm,
    image_to_array, image_to_rgb, rgb_to_image
)
from da3_ros.ros.conversions.compressed_depth import depth_to_compressed_depth, mm_to_compressed_depth
from da3_ros.ros.conversions.camera_info import camera_info_to_K, make_camera_info
from da3_ros.ros.conversions.clouds import laser_scan, pointcloud2_field, pointcloud2_to_xyz_rgb, xyz_rgb_to_pointcloud2
from da3_ros.ros.conversions.transforms import (
    T_to_pose, T_to_transform, pose_to_T, tf_message, transform_stamped, transform_to_T
)

__all__ = [
    "NS_PER_S", "ConversionError", "ns_to_stamp", "stamp_cdr", "stamp_ns_from_cdr", "stamp_to_ns", "MAX_16UC1_M",
    "array_to_image", "compressed_to_image", "depth_to_image", "depth_to_image_16uc1_mm", "depth_to_mm",
    "depth_to_compressed_depth", "mm_to_compressed_depth", "image_to_array",
    "image_to_rgb", "rgb_to_image", "camera_info_to_K", "make_camera_info", "laser_scan", "pointcloud2_field",
    "pointcloud2_to_xyz_rgb", "xyz_rgb_to_pointcloud2", "T_to_pose", "T_to_transform", "pose_to_T", "tf_message",
    "transform_stamped", "transform_to_T"
]
