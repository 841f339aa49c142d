"""The layers of the tree, as a test: what each package of da3_ros may import (README "Layout").

Every import statement counts, also those inside functions (lazy imports are still dependencies).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "da3_ros"
ROS_MODULES = ("rclpy", "rosidl_runtime_py", "rosbag2_py", "launch", "launch_ros", "builtin_interfaces",
               "rcl_interfaces", "da3_ros.msg")
RUNTIMES = ("torch", "onnx", "onnxruntime", "tensorrt", "tritonclient", "pytriton")
# package -> the da3_ros packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "engines": {"core", "models"},
    "export": {"core", "models", "engines"},
    "ros": {"core", "models", "engines"},
    "offline": {"core", "models", "engines", "export", "ros"},
}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def _is_ros(name: str) -> bool:
    top = name.split(".")[0]
    return top.endswith("_msgs") or any(name == m or name.startswith(m + ".") for m in ROS_MODULES)


def _modules(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def test_every_module_is_in_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the layer packages: {loose}"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} >= set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    bad = []
    for path in _modules(package):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "da3_ros" and len(parts) > 1 and parts[1] in ALLOWED and parts[1] != package:
                if parts[1] not in ALLOWED[package]:
                    bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", ["core", "models", "engines", "export"])
def test_only_ros_and_offline_know_ros(package):
    bad = [f"{p.relative_to(REPO)} imports {n}" for p in _modules(package) for n in _imports(p) if _is_ros(n)]
    assert not bad, "\n".join(bad)


def test_the_core_needs_no_runtime():
    """The core runs where only numpy is: no torch, ONNX, TensorRT or Triton import under it."""
    bad = [f"{p.relative_to(REPO)} imports {n}" for p in _modules("core") for n in _imports(p)
           if n.split(".")[0] in RUNTIMES]
    assert not bad, "\n".join(bad)


def test_the_lint_finds_what_it_forbids(tmp_path):
    """The checks above on a file that breaks them: they cannot pass vacuously."""
    f = tmp_path / "bad.py"
    f.write_text("import rclpy\nfrom sensor_msgs.msg import Image\n\ndef later():\n    from da3_ros.ros import emit\n")
    names = _imports(f)
    assert [n for n in names if _is_ros(n)] == ["rclpy", "sensor_msgs.msg", "sensor_msgs.msg.Image"]
    assert "da3_ros.ros" in names and len(_modules("core")) > 10


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_files_and_functions_stay_small():
    """Every module <= 400 lines, every function <= 60: each piece readable in one sitting."""
    big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > MAX_FILE_LINES:
            big.append(f"{path.relative_to(REPO)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(f"{path.relative_to(REPO)}::{node.name}: {length} lines")
    assert not big, "\n".join(big)


def test_the_node_only_wires():
    assert (PACKAGE / "ros" / "node.py").read_text().count("\n") <= 150
