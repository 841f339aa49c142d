"""``depth_lifecycle_node``: the same node as ``depth_node``, managed (REP 2000 / Nav2's lifecycle manager).

configure loads the model and engine and creates the publishers; activate starts the subscriptions, the
worker and /diagnostics; deactivate stops them (nothing is published while inactive); cleanup releases the
publishers and the engine. The standard services (``<node>/change_state``, ``<node>/get_state``) drive it.
"""
from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from da3_ros.ros.node import DepthPipeline
from da3_ros.ros.ros_main import run, say_failure


class DepthLifecycleNode(DepthPipeline, LifecycleNode):
    """da3_ros as a managed node; parameters are declared at construction, the model loads in configure."""

    def __init__(self, **kwargs):
        super().__init__("da3_depth", **kwargs)
        self._declare()
        self._watch_parameters()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # the transition fails, the node lives; a bug keeps its traceback
            say_failure(exc, self.get_logger().error, "configure failed")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate()
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        wait_s = self._deactivate_wait_s()
        if not self._deactivate(wait_s):  # nothing is torn down under a worker that is still inside a set
            self.get_logger().error(
                f"deactivate refused: the worker is still inside a set after {wait_s:.1f} s (a long forward, a "
                "graph export or an engine build); the node stays active and keeps publishing; try again later")
            return TransitionCallbackReturn.FAILURE
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._active:  # a shutdown cannot be refused: wait for the set in flight as deactivate does, then stop
            if not self._deactivate(self._deactivate_wait_s()):
                self.get_logger().warning("shutdown with the worker still inside a set: not waited for")
                self._deactivate()
            self._active = False
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        if self._active:
            self._deactivate()
        return super().destroy_node()


def main(args=None) -> int:
    return run(DepthLifecycleNode, args, "da3_depth")
