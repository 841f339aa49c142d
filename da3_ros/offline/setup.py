"""The node's set-up without a node, for ``da3-ros bag`` and ``da3-ros media``: config, rig and per-set core.

Built from the same ``DepthConfig`` the node reads its parameters into (names, defaults, validation), the
same ``build_rig`` and the same per-set processor, so the offline commands take the node's parameter file
with the same names and meaning. No DDS: nothing is initialised in rclpy.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from da3_ros.core.config import DepthConfig
from da3_ros.core.processor import FrameSetProcessor
from da3_ros.core.param_file import ParamFileError, check_params, parse_override, read_params_file
from da3_ros.core.rig import Rig
from da3_ros.core.results import SetResult
from da3_ros.core.rig_setup import build_rig
from da3_ros.core.temporal.chain import TumWriter
from da3_ros.core.static_tf import TfBuffer
from da3_ros.ros.pipeline import SetProcessor

__all__ = ["OfflineSetup", "ParamFileError", "TrajectoryFile", "load_values", "ros_type_name"]


def load_values(params_file: str | None, overrides: list[str] | None = None,
                log: logging.Logger | None = None) -> dict[str, Any]:
    """Parameter values from ``--params-file`` and ``--param name:=value`` overrides, typed as the node types them."""
    values = read_params_file(params_file) if params_file else {}
    for text in overrides or []:
        name, value = parse_override(text)
        values[name] = value
    values, unknown = check_params(values)
    if unknown and log is not None:
        log.warning("ignored (the node declares no such parameter): %s", ", ".join(unknown))
    return values


class OfflineSetup:
    """The node's config, rig and per-set core, from a dict of parameter values instead of a ROS node."""

    def __init__(self, values: dict[str, Any], log: logging.Logger | None = None):
        self.config = DepthConfig.from_values(values)  # validated as the node validates its parameters
        self._log = log or logging.getLogger("da3_ros.offline")
        self._said: set[str] = set()
        self.static_tf = TfBuffer()  # /tf_static, and /tf for range sensors (da3-ros bag)
        self.rig: Rig | None = None
        self.core: SetProcessor | None = None  # for sets of ROS messages (a bag)

    @property
    def frames(self) -> FrameSetProcessor:
        """The per-set policy on plain frames (media: no message round trip); after ``load``."""
        if self.core is None:
            raise RuntimeError("OfflineSetup.load() first: the engine is built there")
        return self.core.frames

    @property
    def cameras(self) -> list[str]:
        """The rig's camera names, in order."""
        return list(self.config.cameras)

    @property
    def ref(self) -> int:
        """Index of the reference camera."""
        return self.config.ref

    @property
    def param(self) -> Callable[[str], Any]:
        """The parameter getter (name -> value, defaults applied)."""
        return self.config.value

    def topics(self, camera: str) -> tuple[str, str]:
        """(image topic, camera_info topic) of a camera, absolute as a bag stores them (the node runs at /)."""
        image, info = self.config.topics(camera)
        return "/" + image.lstrip("/"), "/" + info.lstrip("/")

    def warn(self, text: str) -> None:
        """A note for the log, each said once (a camera's problem persists over sets)."""
        if text not in self._said:
            self._said.add(text)
            self._log.warning(text)

    def load(self) -> None:
        """Build the engine, the rig and the per-set core (seconds: the model is loaded here)."""
        from da3_ros.engines import engine_from_config

        self.rig = build_rig(self.config, engine_from_config(self.config), self.warn)
        self.core = SetProcessor(self.rig, self.config.core_config(), self.static_tf, warn=self.warn)


class TrajectoryFile:
    """The reference camera's odometry of every processed set as a TUM file (``--trajectory``; evo reads it).

    Needs ``temporal.keyframes`` > 0 (the window chain is the trajectory); flushed per line, so a run cut short
    leaves a readable file.
    """

    def __init__(self, path: str | Path, config: DepthConfig):
        if config.temporal is None:
            raise ParamFileError(f"--trajectory {str(path)!r} needs the temporal window: set "
                                 "-p temporal.keyframes:=K (K >= 1) to chain the sets into one trajectory")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._writer = TumWriter(self.path)
        self.poses = 0

    def record(self, out: SetResult) -> None:
        """Append the set's odometry (nothing for a set without one, e.g. the reference camera silent)."""
        odom = out.odometry()
        if odom is not None:
            self._writer.write(odom.stamp_ns, odom.T_odom_cam)
            self.poses += 1

    def close(self) -> None:
        self._writer.close()


def ros_type_name(msg_class: type) -> str:
    """``sensor_msgs.msg.Image`` -> ``sensor_msgs/msg/Image`` (the name rosbag2 stores)."""
    return f"{msg_class.__module__.split('.')[0]}/msg/{msg_class.__name__}"
