"""The rig from the node's parameters: the engine they name and the rig extrinsics they give. ROS-free.

Used by the node and by the offline commands (``da3-ros bag`` / ``media``), so both build the same rig.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from da3_ros.core.errors import ConfigError
from da3_ros.core.geometry import R_from_quaternion, invert_T
from da3_ros.core.params import camera_param, scale_filter_config
from da3_ros.ros.pipeline import POSE_CONDITIONING
from da3_ros.core.rig import Rig



def known_extrinsics(mode: str, poses: list[list[float]], cameras: list[str], ref: int, has_pose: bool,
                     warn: Callable[[str], None] = lambda text: None) -> np.ndarray | None:
    """T_ref_cam (N, 4, 4) from ``cameras.<name>.T_ref_cam`` = [x, y, z, qx, qy, qz, qw] (metres), or None.

    ``mode`` is ``pose_conditioning``: parameters are used for ``params``, and for ``auto`` when every camera
    has them; never for ``tf_static`` or ``off``. The reference camera becomes the origin, whatever was given.
    """
    if mode not in POSE_CONDITIONING:
        raise ConfigError(f"pose_conditioning must be one of {POSE_CONDITIONING}, got {mode!r}")
    if mode in ("off", "tf_static") or (mode == "auto" and not all(poses)):
        return None
    bad = [c for c, v in zip(cameras, poses) if len(v) != 7]
    if bad:
        raise ConfigError(f"pose_conditioning=params needs cameras.<name>.T_ref_cam = [x,y,z,qx,qy,qz,qw] for {bad}")
    if not has_pose:
        warn("this model takes no pose conditioning; cameras.*.T_ref_cam ignored")
        return None
    T = np.tile(np.eye(4), (len(poses), 1, 1))
    for i, v in enumerate(poses):
        T[i, :3, :3], T[i, :3, 3] = R_from_quaternion(np.array(v[3:])), v[:3]
    return invert_T(T[ref])[None] @ T


def build_rig(param: Callable[[str], Any], cameras: list[str], ref: int,
              warn: Callable[[str], None] = lambda text: None) -> Rig:
    """The engine the parameters name (``param(name)`` -> value), its rig and the metric scale filter."""
    from da3_ros.engines import create_engine
    from da3_ros.engines.triton_engine import triton_settings

    engine = create_engine(param("backend"), param("model"), device=param("device"), precision=param("precision"),
                           threads=param("threads"), cache_dir=param("engine_cache_dir") or None,
                           process_res=param("process_res"), process_res_method=param("process_res_method"),
                           ref_view_strategy="first", mixed_resolution=param("mixed_resolution"),
                           triton=triton_settings(param) if param("backend") == "triton" else None,
                           metric_model=param("metric_model"), metric_every_n_sets=param("metric.every_n_sets"))
    if not engine.trained:
        warn(f"{engine.label}: depth, poses and clouds are MEANINGLESS (untrained)")
    poses = [list(param(camera_param(c, "T_ref_cam")) or []) for c in cameras]
    T_ref_cam = known_extrinsics(param("pose_conditioning"), poses, cameras, ref, engine.variant.has_pose, warn)
    return Rig(engine, ref, T_ref_cam, scale_filter_config(param))
