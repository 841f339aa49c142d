"""The README documents what the code declares: every parameter, output topic and launch argument."""
import re

from conftest import REPO
from da3_ros.ros import emit
from da3_ros.core.params import CAMERA_PARAMS, NODE_PARAMS

README = (REPO / "README.md").read_text()


def test_every_parameter_is_documented():
    missing = [p.name for p in NODE_PARAMS if f"`{p.name}`" not in README]
    missing += [p.name for p in CAMERA_PARAMS if f"`cameras.<name>.{p.name}`" not in README]
    assert not missing, f"README lacks parameters {missing}"


def test_every_topic_is_documented():
    """Every topic the emitter (da3_ros.ros.emit, shared by node and bag) can emit is in the README."""
    topics = [f"`{emit.camera_topic('<camera>', k)}`" for k in emit.PER_CAMERA_OUTPUTS]
    topics += [f"`{t}`" for t in (emit.FUSED, emit.MULTIVIEW, emit.TF, emit.OBSTACLES, emit.SCAN)]
    assert topics and not [t for t in topics if t not in README]


def test_every_launch_argument_is_documented():
    for launch in sorted((REPO / "launch").glob("*.launch.py")):
        args = re.findall(r'DeclareLaunchArgument\(\s*"([^"]+)"', launch.read_text())
        assert args, launch
        row = next(line for line in README.splitlines() if line.startswith(f"| `{launch.name}` |"))  # its table row
        assert not [a for a in args if f"`{a}`" not in row], (launch.name, args)
