"""Which errors are one line and which keep their traceback (issue 15, item 17).

Only the project's own typed errors (``da3_ros.core.errors.ConfigError`` and the other typed errors of
``ros_main.user_error_types``) mean "fix your parameters"; a plain ``ValueError`` (a numpy shape error, an
internal check) is a bug and keeps its traceback, at start-up and in a lifecycle node's configure.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from ros_harness import ros_env


def _run(code: str, domain_id: int) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-c", code], env=ros_env(domain_id), capture_output=True, text=True,
                         cwd="/", timeout=120)  # cwd: the installed package, not the source tree
    return out.returncode, out.stdout + out.stderr


def test_a_numpy_value_error_at_start_up_is_a_bug_and_keeps_its_traceback(domain_id):
    """A shape error while building the node: traceback, then ``cannot start: unexpected ValueError``."""
    code = ("import numpy as np\n"
            "from rclpy.node import Node\n"
            "from da3_ros.ros.ros_main import run\n"
            "class Broken(Node):\n"
            "    def __init__(self):\n"
            "        super().__init__('broken')\n"
            "        np.zeros(6).reshape(4, 4)\n"
            "raise SystemExit(run(Broken, None, 'broken'))\n")
    rc, text = _run(code, domain_id)
    assert rc == 1, text
    assert "Traceback" in text and "cannot reshape array" in text, text
    assert "cannot start: unexpected ValueError" in text, text


def test_a_config_error_at_start_up_is_one_line(domain_id):
    code = ("from rclpy.node import Node\n"
            "from da3_ros.core.errors import ConfigError\n"
            "from da3_ros.ros.ros_main import run\n"
            "class Bad(Node):\n"
            "    def __init__(self):\n"
            "        super().__init__('bad')\n"
            "        raise ConfigError('x = 3 is not allowed: set x to 1 or 2')\n"
            "raise SystemExit(run(Bad, None, 'bad'))\n")
    rc, text = _run(code, domain_id)
    assert rc == 1 and "Traceback" not in text, text
    assert "[bad] cannot start: ConfigError: x = 3 is not allowed: set x to 1 or 2" in text, text


_LIFECYCLE = """
import numpy as np
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from da3_ros.ros.lifecycle_node import DepthLifecycleNode
from da3_ros.core.errors import ConfigError

class Node(DepthLifecycleNode):
    def _build_rig(self):
        {body}

rclpy.init(args=['--ros-args', '-p', 'model:=random:da3-small@0', '-p', 'camera_names:=[a]'])
node = Node()
result = node.trigger_configure()
print('RESULT', result)
node.destroy_node()
rclpy.try_shutdown()
"""


def test_a_bug_at_lifecycle_configure_is_logged_with_its_traceback(domain_id):
    """Configure fails (FAILURE, the node lives) in both cases; only the user error is one line."""
    rc, text = _run(_LIFECYCLE.format(body="np.zeros(6).reshape(4, 4)"), domain_id)
    assert rc == 0 and "RESULT" in text and "configure failed" in text, text
    assert "Traceback" in text and "cannot reshape array" in text, text
    rc, text = _run(_LIFECYCLE.format(body="raise ConfigError('model x does not exist: set model')"), domain_id)
    assert rc == 0 and "configure failed: ConfigError: model x does not exist: set model" in text, text
    assert "Traceback" not in text, text


def test_the_projects_user_errors_are_typed():
    """What parameters can get wrong raises ConfigError (a ValueError: callers catching ValueError still do)."""
    from da3_ros.core.errors import ConfigError
    from da3_ros.models.registry import get_variant
    from da3_ros.core.config import OutputConfig
    from da3_ros.ros.ros_main import user_error_types
    from da3_ros.core.rig_setup import known_extrinsics

    assert issubclass(ConfigError, ValueError)
    assert ConfigError in user_error_types() and ValueError not in user_error_types()
    with pytest.raises(ConfigError, match="unknown DA3 variant 'da3-nope'"):
        get_variant("da3-nope")
    with pytest.raises(ConfigError, match="tf.mode must be one of"):
        OutputConfig(tf_mode="sideways")
    with pytest.raises(ConfigError, match="pose_conditioning must be one of"):
        known_extrinsics("sometimes", [[]], ["a"], 0, True)
    with pytest.raises(ConfigError, match="needs cameras.<name>.T_ref_cam"):
        known_extrinsics("params", [[1.0, 2.0]], ["a"], 0, True)


def _raised(exc: BaseException) -> BaseException:
    """``exc`` as caught from a frame of ours (with a traceback, as the worker and the bag catch it)."""
    def forward_of_one_set():
        raise exc
    try:
        forward_of_one_set()
    except BaseException as caught:  # noqa: BLE001
        return caught
    raise AssertionError("not raised")


def test_a_failed_sets_log_is_one_line_for_typed_errors_and_a_traceback_for_bugs():
    """Issue 23.13: the worker's and the bag's per-set log.

    The project's typed errors and out of memory in one line; anything else (a bug) with its traceback, which
    names where it happened.
    """
    from da3_ros.core.errors import ConfigError
    from da3_ros.engines.base import BackendUnavailable
    from da3_ros.ros.ros_main import set_failure_text

    for typed in (ConfigError("fused_frame 'x' is not a camera frame"), BackendUnavailable("no GPU: install x"),
                  RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")):
        text = set_failure_text(_raised(typed))
        assert "\n" not in text and "Traceback" not in text and type(typed).__name__ in text, text
    bug = set_failure_text(_raised(KeyError("views")))
    first, *rest = bug.splitlines()
    assert first.startswith("KeyError: 'views'") and "traceback follows" in first
    assert "Traceback (most recent call last)" in bug and "forward_of_one_set" in bug and len(rest) >= 3
    shape = set_failure_text(_raised(ValueError("operands could not be broadcast")))  # a plain ValueError: a bug
    assert "Traceback" in shape


def test_the_bag_logs_its_first_error_with_the_bugs_traceback_and_keeps_one_line_in_the_summary(caplog):
    import logging

    from da3_ros.offline.bag_summary import BagSummary
    from da3_ros.core.processor import failure_text
    from da3_ros.ros.ros_main import set_failure_text

    summary = BagSummary(["a"])
    exc = _raised(IndexError("list index out of range"))
    with caplog.at_level(logging.WARNING, logger="da3_ros.offline.bag"):
        summary.drop("error", failure_text(exc), log=set_failure_text(exc))
        summary.drop("error", failure_text(exc), log=set_failure_text(exc))  # once per reason, as before
    (record,) = caplog.records
    assert "Traceback" in record.getMessage() and "forward_of_one_set" in record.getMessage()
    assert summary.drop_examples["error"] == "IndexError: list index out of range" and summary.drops["error"] == 2
