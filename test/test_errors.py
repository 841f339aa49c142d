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
