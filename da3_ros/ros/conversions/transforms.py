"""geometry_msgs Transform / Pose / TransformStamped and tf2_msgs/TFMessage <-> 4x4 T."""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, TransformStamped, Vector3
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from da3_ros.core.geometry import R_from_quaternion, quaternion_from_R

from da3_ros.ros.conversions.stamps import ConversionError, ns_to_stamp


def _q_msg(R: np.ndarray) -> Quaternion:
    x, y, z, w = (float(v) for v in quaternion_from_R(R))
    return Quaternion(x=x, y=y, z=z, w=w)


def _check_T44(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ConversionError(f"T must be (4, 4), got {T.shape}")
    return T


def _T(q: Quaternion, t: tuple[float, float, float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R_from_quaternion([q.x, q.y, q.z, q.w])
    T[:3, 3] = t
    return T


def T_to_transform(T: np.ndarray) -> Transform:
    """4x4 rigid transform -> geometry_msgs/Transform (rotation via the nearest proper rotation)."""
    T = _check_T44(T)
    x, y, z = (float(v) for v in T[:3, 3])
    return Transform(translation=Vector3(x=x, y=y, z=z), rotation=_q_msg(T[:3, :3]))


def T_to_pose(T: np.ndarray) -> Pose:
    """4x4 rigid transform -> geometry_msgs/Pose."""
    T = _check_T44(T)
    x, y, z = (float(v) for v in T[:3, 3])
    return Pose(position=Point(x=x, y=y, z=z), orientation=_q_msg(T[:3, :3]))


def transform_to_T(msg: Transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 float64 (the quaternion is normalised first)."""
    t = msg.translation
    return _T(msg.rotation, (t.x, t.y, t.z))


def pose_to_T(msg: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4 float64 (the quaternion is normalised first)."""
    p = msg.position
    return _T(msg.orientation, (p.x, p.y, p.z))


def transform_stamped(T_parent_child: np.ndarray, parent_frame: str, child_frame: str,
                      stamp: Time | int) -> TransformStamped:
    """TransformStamped placing ``child_frame`` in ``parent_frame``; stamp as Time or integer nanoseconds."""
    if not isinstance(stamp, Time):
        stamp = ns_to_stamp(stamp)
    return TransformStamped(header=Header(stamp=stamp, frame_id=parent_frame), child_frame_id=child_frame,
                            transform=T_to_transform(T_parent_child))


def tf_message(transforms: list[TransformStamped]) -> TFMessage:
    """Wrap transforms in a tf2_msgs/TFMessage (for /tf or /tf_static)."""
    return TFMessage(transforms=list(transforms))
