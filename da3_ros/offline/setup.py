"""The node's set-up without a node: its parameters, rig and per-set core for the offline commands.

``OfflineSetup`` runs the node's own ``_declare`` (names, defaults, validation), ``_build_rig`` (engine,
conditioning from parameters) and ``_make_core`` (da3_ros.ros.pipeline) on parameters read from a file, so
``da3-ros bag`` and ``da3-ros media`` take the node's parameter file with the same names and meaning and run
the same core. No DDS: nothing is initialised in rclpy.
"""
from __future__ import annotations

import logging
from typing import Any

from rclpy.parameter import Parameter

from da3_ros.ros.node import DepthPipeline
from da3_ros.ros.emit import PER_CAMERA_OUTPUTS
from da3_ros.core.param_file import ParamFileError, check_params, parse_override, read_params_file
from da3_ros.core.static_tf import StaticTfBuffer

__all__ = ["PER_CAMERA_OUTPUTS", "OfflineSetup", "ParamFileError", "load_values", "ros_type_name"]


class _Logger:
    """The slice of rclpy's logger the node's set-up calls, onto ``logging``; repeated warnings said once."""

    def __init__(self, log: logging.Logger):
        self._log = log
        self._said: set[str] = set()

    def info(self, text: str, **_: Any) -> None:
        self._log.info(text)

    def warning(self, text: str, **_: Any) -> None:
        if text not in self._said:
            self._said.add(text)
            self._log.warning(text)

    warn = warning  # rclpy's deprecated name, kept for callers outside this package

    def error(self, text: str, **_: Any) -> None:
        self._log.error(text)


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


class OfflineSetup(DepthPipeline):
    """The node's parameter handling, rig and core, fed from a dict instead of a ROS parameter server."""

    def __init__(self, values: dict[str, Any], log: logging.Logger | None = None):
        self._values = dict(values)
        self._declared: dict[str, Any] = {}
        self._logger = _Logger(log or logging.getLogger("da3_ros.offline.setup"))
        self._declare()  # camera_names, reference camera, output and navigation settings: validated as the node does
        self.static_tf = StaticTfBuffer()
        self.rig = None

    # what DepthPipeline calls on a Node
    def declare_parameter(self, name: str, value: Any, descriptor: Any = None) -> None:
        self._declared[name] = value

    def get_logger(self) -> _Logger:
        return self._logger

    def _p(self, name: str):
        if name in self._values:
            return self._values[name]
        value = self._declared.get(name)
        return None if isinstance(value, Parameter.Type) else value

    def topics(self, camera: str) -> tuple[str, str]:
        """(image topic, camera_info topic) of a camera, absolute as a bag stores them (the node runs at /)."""
        return tuple("/" + t.lstrip("/") for t in self._topics(camera))  # type: ignore[return-value]

    def load(self) -> None:
        """Build the engine and the per-set core (seconds: the model is loaded here)."""
        self.rig = self._build_rig()
        self.core = self._make_core()

    @property
    def param(self):
        """The parameter getter (name -> value, defaults applied)."""
        return self._p


def ros_type_name(msg_class: type) -> str:
    """``sensor_msgs.msg.Image`` -> ``sensor_msgs/msg/Image`` (the name rosbag2 stores)."""
    return f"{msg_class.__module__.split('.')[0]}/msg/{msg_class.__name__}"
