"""The node's parameters the ROS way, declared once from the table in da3_ros.core.params.

Descriptors (description, range, choices, read-only), everything validated at start-up, and changes at
runtime only through a validating callback (output settings; everything else needs a restart).
"""
from __future__ import annotations

import dataclasses

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException, ParameterUninitializedException
from rclpy.parameter import Parameter

from da3_ros.core.errors import ConfigError
from da3_ros.core.config import OUTPUT_PARAMS, DepthConfig, camera_names
from da3_ros.ros.compat import on_parameter_set
from da3_ros.core.params import CAMERA_PARAMS, NODE_PARAMS, Param, camera_param, check_values, normalized, param_table


def parameter_descriptor(p: Param) -> ParameterDescriptor:
    """The ROS descriptor of a parameter of the table (``ros2 param describe``); rclpy enforces its range."""
    # dynamic_typing where a YAML false means a choice: else rclpy refuses `tf.mode: off` ("type BOOL")
    d = ParameterDescriptor(description=p.description, read_only=not p.dynamic,
                            additional_constraints=p.constraints(), dynamic_typing=bool(p.false_means))
    if p.range is not None:
        lo, hi = p.range
        if isinstance(p.default, int) and not isinstance(p.default, bool):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=p.step)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


class ParameterWiring:
    """Mixin for a Node: the table's parameters declared, read into ``self.config``, output settings live."""

    def _declare(self) -> None:
        for p in NODE_PARAMS:  # an empty list has no type for ROS: metric.range_topics is a string array
            self._declare_one(p, Parameter.Type.STRING_ARRAY if p.default == [] else p.default)
        cameras = camera_names(self._p("camera_names"))  # before the per-camera parameters are declared
        table = param_table(list(cameras))
        for c in cameras:
            for p in CAMERA_PARAMS:
                self._declare_one(table[camera_param(c, p.name)],
                                  Parameter.Type.DOUBLE_ARRAY if p.default == [] else p.default)
        self.config = DepthConfig.from_getter(self._p)

    def _declare_one(self, p: Param, default) -> None:
        """Declare with its descriptor (description, range, choices, read-only); a value out of range is named."""
        try:
            self.declare_parameter(p.name, default, parameter_descriptor(p))
        except InvalidParameterValueException as exc:
            raise ConfigError(f"{p.name}: {exc.args[0]} (allowed: {p.constraints()})") from None

    def _watch_parameters(self) -> None:
        """Parameter sets: invalid values refused with the reason; output settings applied to the next set."""
        on_parameter_set(self, self._check_set, self._apply_set)  # Humble has no post-set callbacks: see compat

    def _check_set(self, params: list[Parameter]) -> SetParametersResult:
        new = {p.name: normalized(p.name, p.value) for p in params}
        problems = check_values(new, list(self.config.cameras))
        if not problems and set(new) & set(OUTPUT_PARAMS):
            try:
                self.config.with_values(new)
            except ValueError as exc:
                problems.append(str(exc))
        return SetParametersResult(successful=not problems, reason="; ".join(problems))

    def _apply_set(self, params: list[Parameter]) -> None:
        if not {p.name for p in params} & set(OUTPUT_PARAMS):
            return
        changes = {p.name: normalized(p.name, p.value) for p in params}
        if renamed := self.config.odom_child_renamed(changes):
            self.get_logger().warning(renamed)
        self.config = self.config.with_values(changes)
        if getattr(self, "core", None) is not None:  # configured: the worker's next set uses it
            self.core.cfg = dataclasses.replace(self.core.cfg, out_cfg=self.config.out)
        self.get_logger().info(f"applied {', '.join(p.name for p in params)}")

    def _p(self, name: str):
        try:
            return normalized(name, self.get_parameter(name).value)
        except ParameterUninitializedException:  # typed parameters declared without a value
            return None
