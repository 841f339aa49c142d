"""Linters as tests: ruff (pycodestyle, pyflakes, bugbear, pep257 docstrings) everywhere; mypy on the core."""
import ast
import shutil
import subprocess

from conftest import REPO


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is installed by scripts/setup.sh (requirements/test.txt)"
    out = subprocess.run([ruff, "check", "da3_ros", "test", "launch", "benchmarks"], cwd=REPO, capture_output=True,
                         text=True)
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


def _engine_classes() -> set[str]:
    """Every class of the package that derives from ``engines.base.Engine`` (by name, read from the source)."""
    bases: dict[str, set[str]] = {}
    for path in (REPO / "da3_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
    found, grew = {"Engine"}, True
    while grew:
        new = {name for name, of in bases.items() if of & found} - found
        found |= new
        grew = bool(new)
    return found


def test_every_engine_class_is_checked_against_the_core_protocol():
    """engines/contract.py assigns each engine class to core's DepthEngine (mypy proves it in the test above)."""
    from da3_ros.engines.contract import ENGINE_CLASSES

    text = (REPO / "da3_ros" / "engines" / "contract.py").read_text()
    assert set(ENGINE_CLASSES) == _engine_classes()
    for name in ENGINE_CLASSES:
        assert f": DepthEngine = cast({name}, None)" in text, f"engines/contract.py does not check {name}"


def test_an_engine_that_breaks_the_core_protocol_fails_the_type_check():
    """The contract check can fail: an Engine whose describe() returns no str is no DepthEngine."""
    mypy = shutil.which("mypy")
    assert mypy
    program = ("from typing import cast\nfrom da3_ros.core.engine_api import DepthEngine\n"
               "from da3_ros.engines.base import Engine\n\n\nclass Broken(Engine):\n"
               "    def describe(self) -> int:\n        return 0\n\n\n"
               "_broken: DepthEngine = cast(Broken, None)\n")
    out = subprocess.run([mypy, "--config-file", "setup.cfg", "-c", program], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 1 and '"Broken"' in out.stdout and "DepthEngine" in out.stdout, out.stdout + out.stderr


def test_no_engine_reaches_into_another_engines_private_parts():
    """The metric pair, the CLI and serve use their engines through public methods only (ruff SLF001)."""
    ruff = shutil.which("ruff")
    assert ruff
    files = ["da3_ros/engines/metric_pair.py", "da3_ros/offline/cli.py", "da3_ros/export/triton_serve.py",
             "da3_ros/core"]
    out = subprocess.run([ruff, "check", "--select", "SLF001", *files], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_cli_reaches_its_engine_through_declared_methods_only():
    """No type error about an engine in the CLI (it follows everything it imports): no attribute reached past."""
    mypy = shutil.which("mypy")
    assert mypy
    out = subprocess.run([mypy, "--config-file", "setup.cfg", "da3_ros/offline/cli.py"], cwd=REPO,
                         capture_output=True, text=True)
    about_engines = [line for line in out.stdout.splitlines() if "Engine" in line and ": error:" in line]
    assert not about_engines, "\n".join(about_engines)
