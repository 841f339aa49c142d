"""The README documents what the code declares: every parameter, output topic and launch argument."""
import ast
import re

from conftest import REPO
from da3_ros.params import CAMERA_PARAMS, NODE_PARAMS

README = (REPO / "README.md").read_text()


def _node_py_outputs() -> list[str]:
    tree = ast.parse((REPO / "da3_ros" / "publishing.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PER_CAMERA_OUTPUTS":
            return [v.elts[0].value for v in node.value.values]
    raise AssertionError("PER_CAMERA_OUTPUTS not found in publishing.py")


def test_every_parameter_is_documented():
    missing = [p.name for p in NODE_PARAMS if f"`{p.name}`" not in README]
    missing += [p.name for p in CAMERA_PARAMS if f"`cameras.<name>.{p.name}`" not in README]
    assert not missing, f"README lacks parameters {missing}"


def test_every_topic_is_documented():
    topics = [f"`<camera>/{t}`" for t in _node_py_outputs()] + ["`points_fused`", "`multiview_depth`"]
    assert topics and not [t for t in topics if t not in README]


def test_every_launch_argument_is_documented():
    for launch in sorted((REPO / "launch").glob("*.launch.py")):
        args = re.findall(r'DeclareLaunchArgument\(\s*"([^"]+)"', launch.read_text())
        assert args, launch
        row = next(line for line in README.splitlines() if f"`{launch.name}`" in line and line.startswith("|"))
        assert not [a for a in args if f"`{a}`" not in row], (launch.name, args)
