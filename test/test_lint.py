"""Linters as tests: ruff (pycodestyle, pyflakes, bugbear, pep257 docstrings) everywhere; mypy on the core."""
import shutil
import subprocess

from conftest import REPO


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is installed by scripts/setup.sh (requirements/test.txt)"
    out = subprocess.run([ruff, "check", "da3_ros", "test", "launch"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# Strictly typed (every function annotated, setup.cfg): the ROS-free core and the runtimes. Checked too: the
# models, the offline file formats and the launch helpers.
STRICT = ["da3_ros/core", "da3_ros/engines"]
TYPED = [*STRICT, "da3_ros/models", "da3_ros/offline/mcap_io.py", "da3_ros/offline/ply.py",
         "da3_ros/ros/launch_helpers.py"]


def test_mypy_is_clean_on_the_core():
    """No error, none silenced: no module of the package is skipped or followed silently."""
    mypy = shutil.which("mypy")
    assert mypy, "mypy is installed by scripts/setup.sh (requirements/test.txt)"
    config = (REPO / "setup.cfg").read_text()
    assert "follow_imports" not in config and "ignore_errors" not in config
    assert "[mypy-da3_ros.core.*,da3_ros.engines.*]\n" in config and "disallow_untyped_defs = True" in config
    out = subprocess.run([mypy, "--config-file", "setup.cfg", *TYPED], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
