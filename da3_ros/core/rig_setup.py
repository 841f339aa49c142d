"""The rig from the config: the engine it is given and the rig extrinsics the parameters give. ROS-free.

Used by the node and by the offline commands (``da3-ros bag`` / ``media``), so both build the same rig.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from da3_ros.core.config import DepthConfig
from da3_ros.core.engine_api import DepthEngine
from da3_ros.core.errors import ConfigError
from da3_ros.core.geometry import R_from_quaternion, invert_T
from da3_ros.core.params import PoseConditioning, choices
from da3_ros.core.rig import Rig
from da3_ros.core.temporal.tracker import TemporalTracker


def known_extrinsics(mode: str, poses: list[list[float]], cameras: list[str], ref: int, has_pose: bool,
                     warn: Callable[[str], None] = lambda text: None) -> np.ndarray | None:
    """T_ref_cam (N, 4, 4) from ``cameras.<name>.T_ref_cam`` = [x, y, z, qx, qy, qz, qw] (metres), or None.

    ``mode`` is ``pose_conditioning``: parameters are used for ``params``, and for ``auto`` when every camera
    has them; never for ``tf_static`` or ``off``. The reference camera becomes the origin, whatever was given.
    """
    if mode not in choices(PoseConditioning):
        raise ConfigError(f"pose_conditioning must be one of {choices(PoseConditioning)}, got {mode!r}")
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


def build_rig(cfg: DepthConfig, engine: DepthEngine, warn: Callable[[str], None] = lambda text: None) -> Rig:
    """The rig of ``cfg``'s cameras around ``engine``: its known extrinsics and its metric scale filter.

    The caller builds ``engine`` from the same config (``engines.engine_from_config``); an untrained one is said.
    """
    if not engine.trained:
        warn(f"{engine.label}: depth, poses and clouds are MEANINGLESS (untrained)")
    tracker = None
    if cfg.temporal is not None:
        if not engine.variant.has_pose:
            raise ConfigError(f"temporal.keyframes = {cfg.temporal.rule.max_keyframes} needs a model with camera "
                              f"heads (poses) to chain windows; {engine.variant.name} has none: use "
                              "da3-small/base/large/giant (or a pair with metric_model), or temporal.keyframes 0")
        tracker = TemporalTracker(cfg.temporal)
        if any(cfg.known_poses()):
            warn("cameras.<name>.T_ref_cam ignored: with temporal.keyframes > 0 no set is pose-conditioned")
        return Rig(engine, cfg.ref, None, cfg.scale_filter, tracker)
    T_ref_cam = known_extrinsics(cfg.value("pose_conditioning"), cfg.known_poses(), list(cfg.cameras), cfg.ref,
                                 engine.variant.has_pose, warn)
    return Rig(engine, cfg.ref, T_ref_cam, cfg.scale_filter)
