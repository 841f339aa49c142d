"""rclpy across the supported distros: the APIs that differ between Humble (rclpy 3.3) and Jazzy, Kilted, Lyrical.

Checked against ros2/rclpy (tags 3.3.15 = Humble, branch jazzy = 7.1, rolling) and the Kilted wheel (9.1.2):
- the QoS event module: ``rclpy.qos_event`` on Humble, renamed ``rclpy.event_handler`` in Iron (``qos_event``
  stays as an alias that warns it is deprecated);
- ``Node.add_post_set_parameters_callback``: from Iron on; Humble has only the on-set callbacks.
Everything else the package uses (lifecycle, raw subscriptions, event callbacks, ``try_shutdown``,
``ExternalShutdownException``, the parameter exceptions, ``Logger.warning``) is the same in all of them.
"""
from __future__ import annotations

from collections.abc import Callable

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble: the module's name before Iron
    from rclpy.qos_event import SubscriptionEventCallbacks  # type: ignore[no-redef]

__all__ = ["SubscriptionEventCallbacks", "on_parameter_set"]


def on_parameter_set(node: Node, check: Callable[[list[Parameter]], SetParametersResult],
                     apply: Callable[[list[Parameter]], None]) -> None:
    """Register ``check`` (may refuse a set, with its reason) and ``apply`` (runs once a set is accepted).

    From Iron on, ``apply`` is a post-set callback. Humble has none: there ``check`` applies an accepted set
    itself. That is the same, provided this is the node's first on-set callback: Humble runs them newest
    first, stops at the first refusal and stores the values right after the last (oldest) one accepts.
    """
    if hasattr(node, "add_post_set_parameters_callback"):
        node.add_on_set_parameters_callback(check)
        node.add_post_set_parameters_callback(apply)
        return

    def check_then_apply(params: list[Parameter]) -> SetParametersResult:
        result = check(params)
        if result.successful:
            apply(params)
        return result

    node.add_on_set_parameters_callback(check_then_apply)
