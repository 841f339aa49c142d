"""da3_ros.ros.compat: the rclpy APIs that differ between Humble and later distros, both paths on real rclpy."""
from __future__ import annotations

import importlib.util
import sys
import warnings

import pytest
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from conftest import REPO
from da3_ros.ros import compat


def _fresh_compat():
    """A new copy of the compat module, imported under the current sys.modules (not registered)."""
    spec = importlib.util.find_spec("da3_ros.ros.compat")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_event_callbacks_come_from_event_handler_or_humble_s_qos_event(monkeypatch):
    from rclpy.event_handler import SubscriptionEventCallbacks

    assert compat.SubscriptionEventCallbacks is SubscriptionEventCallbacks
    with warnings.catch_warnings():  # here qos_event is the alias (warns, re-exports event_handler's names)
        warnings.simplefilter("ignore")
        import rclpy.qos_event  # noqa: F401
    monkeypatch.setitem(sys.modules, "rclpy.event_handler", None)  # Humble: no such module
    humble_like = _fresh_compat()
    assert humble_like.SubscriptionEventCallbacks is sys.modules["rclpy.qos_event"].SubscriptionEventCallbacks
    assert humble_like.SubscriptionEventCallbacks(incompatible_qos=print).incompatible_qos is print


class _HumbleNode(Node):
    """A real rclpy node without post-set callbacks, as Humble's (rclpy 3.3) is."""

    def __getattribute__(self, name):
        if name == "add_post_set_parameters_callback":
            raise AttributeError(name)
        return super().__getattribute__(name)


@pytest.fixture
def context(domain_id):
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    yield ctx
    rclpy.try_shutdown(context=ctx)


@pytest.mark.parametrize("node_class", [Node, _HumbleNode], ids=["post_set", "humble"])
def test_an_accepted_set_is_applied_once_and_a_refused_one_never(context, node_class):
    node = node_class("compat_check", context=context)
    try:
        assert hasattr(node, "add_post_set_parameters_callback") == (node_class is Node)
        node.declare_parameter("rate_hz", 10.0)
        applied: list[float] = []

        def check(params):
            bad = [p.name for p in params if p.value <= 0]
            return SetParametersResult(successful=not bad, reason=f"{bad} must be > 0" if bad else "")

        compat.on_parameter_set(node, check, lambda params: applied.extend(p.value for p in params))
        ok, refused = node.set_parameters([Parameter("rate_hz", value=5.0)] + [Parameter("rate_hz", value=-1.0)])
        assert ok.successful and not refused.successful and "must be > 0" in refused.reason
        assert applied == [5.0] and node.get_parameter("rate_hz").value == 5.0
    finally:
        node.destroy_node()


def test_the_differing_apis_are_used_through_compat_only():
    """No other module names the renamed module or the post-set callbacks (they would break on Humble)."""
    offenders = []
    for path in sorted((REPO / "da3_ros").rglob("*.py")):
        if path.name == "compat.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(REPO)}: {name}" for name in
                      ("rclpy.event_handler", "rclpy.qos_event", "add_post_set_parameters_callback") if name in text]
    assert not offenders, offenders
