"""Linters as tests: ruff (pycodestyle, pyflakes, bugbear, pep257 docstrings) over the package and tests."""
import shutil
import subprocess

from conftest import REPO


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is installed by scripts/setup.sh (requirements/test.txt)"
    out = subprocess.run([ruff, "check", "da3_ros", "test", "launch"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
