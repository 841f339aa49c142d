"""Linters as tests: ruff (pycodestyle, pyflakes, bugbear, pep257 docstrings) everywhere; mypy on the core."""
import shutil
import subprocess

from conftest import REPO


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is installed by scripts/setup.sh (requirements/test.txt)"
    out = subprocess.run([ruff, "check", "da3_ros", "test", "launch"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# The ROS-free core: everything a node, the CLI and the tests build on without rclpy.
TYPED_CORE = ["da3_ros/core", "da3_ros/engines", "da3_ros/models", "da3_ros/ros/pipeline.py",
              "da3_ros/offline/mcap_io.py",
              "da3_ros/offline/ply.py", "da3_ros/ros/launch_helpers.py"]


def test_mypy_is_clean_on_the_core():
    mypy = shutil.which("mypy")
    assert mypy, "mypy is installed by scripts/setup.sh (requirements/test.txt)"
    out = subprocess.run([mypy, "--config-file", "setup.cfg", *TYPED_CORE], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
