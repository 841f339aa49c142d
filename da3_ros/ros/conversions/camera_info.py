"""sensor_msgs/CameraInfo <-> K (3x3, pixels) and image size."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from da3_ros.core.geometry import intrinsics_problem
from da3_ros.ros.conversions.stamps import ConversionError


def camera_info_to_K(msg: CameraInfo) -> tuple[np.ndarray, tuple[int, int]]:
    """sensor_msgs/CameraInfo -> (K (3, 3) float64, (height, width)) of the images the camera publishes.

    A non-default ROI and binning (REP 104) are applied, pixel centres exact: a binned pixel i covers
    full-resolution pixels b*i .. b*i + b - 1, so u' = (u - x_offset + 0.5) / b - 0.5 (image_geometry
    uses u' = (u - x_offset) / b, which is off by (b - 1) / (2 b) px).
    Raises ConversionError for an all-zero K (an uncalibrated camera) or an invalid one.
    """
    K = np.array(msg.k, dtype=np.float64).reshape(3, 3)
    problem = intrinsics_problem(K)
    if problem:
        raise ConversionError(f"camera_info from frame {msg.header.frame_id!r} has {problem}")
    h, w = int(msg.height), int(msg.width)
    roi = msg.roi
    x0, y0 = 0, 0
    if roi.width > 0 and roi.height > 0 and (roi.width, roi.height) != (w, h):
        x0, y0, h, w = int(roi.x_offset), int(roi.y_offset), int(roi.height), int(roi.width)
    bx, by = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
    if (x0, y0, bx, by) != (0, 0, 1, 1):
        A = np.array([[1.0 / bx, 0.0, (0.5 - x0) / bx - 0.5], [0.0, 1.0 / by, (0.5 - y0) / by - 0.5],
                      [0.0, 0.0, 1.0]])
        K = A @ K
        h, w = h // by, w // bx
    return K, (h, w)


def make_camera_info(K: np.ndarray, hw: tuple[int, int], header: Header, D: np.ndarray | None = None,
                     distortion_model: str = "plumb_bob") -> CameraInfo:
    """CameraInfo for an (H, W) image with intrinsics K: P = [K | 0], R = identity, D zeros by default.

    The default D has the model's coefficient count (5 for plumb_bob, 8 for rational_polynomial, 4 for
    equidistant).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ConversionError(f"K must be (3, 3), got {K.shape}")
    if D is None:
        D = np.zeros({"rational_polynomial": 8, "equidistant": 4}.get(distortion_model, 5))
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(header=header, height=int(hw[0]), width=int(hw[1]), distortion_model=distortion_model,
                      d=[float(x) for x in np.asarray(D, dtype=np.float64).ravel()], k=K.ravel(),
                      r=np.eye(3).ravel(), p=P.ravel())
