"""The numpy-2 leg: the ROS-free layers' tests again, in a second environment whose numpy is 2.x.

``scripts/setup.sh`` makes ``<venv>-numpy2`` (``.venv-numpy2``): numpy 2 (requirements/numpy2.txt) in front of the
main venv's packages, so torch, onnxruntime, OpenCV, scipy and upstream DA3 are the same builds, run on numpy 2.
ROS wheels are not needed there and are not loaded: the leg fails if a test of it imports rclpy or a message package.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO

NUMPY2_VENV = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv") + "-numpy2")
TEST = REPO / "test"
# core (geometry, preprocessing, sync, the temporal window, rig, static TF), offline formats (parameter files, PLY),
# models (checkpoint loading, seeded weights, a torch forward), engines + export (an ONNX export, then ONNX Runtime
# in a process without torch). Not here: tests that build ROS messages at import (navigation, metric: through
# ros.messages), rclpy's serialiser, and a local checkpoint directory's round trip (6 s), to stay within ~40 s.
LEG = ["test_geometry.py", "test_preprocess.py", "test_sync.py", "test_temporal.py", "test_rig_setup.py",
       "test_static_tf.py", "test_offline_core.py", "test_loading.py",
       "test_onnx.py::test_onnxruntime_engine_runs_without_torch"]
DESELECT = ["test_offline_core.py::test_message_definition_is_complete_and_decodes",
            "test_loading.py::test_local_directory_loads_offline"]
RUNNER = """
import sys, pytest
rc = pytest.main(sys.argv[1:])
import cv2, numpy, onnxruntime, scipy, torch
print("versions: numpy", numpy.__version__, "from", numpy.__file__, "| torch", torch.__version__, "| onnxruntime",
      onnxruntime.__version__, "| cv2", cv2.__version__, "| scipy", scipy.__version__)
ros = sorted(m for m in sys.modules if m.split(".")[0] in ("rclpy", "std_msgs", "sensor_msgs", "geometry_msgs"))
print("ROS modules imported:", ros)
sys.exit(rc)
"""


def run_leg(args: list[str], rootdir: Path) -> subprocess.CompletedProcess:
    """Pytest with args in <venv>-numpy2 (its numpy first, then the main venv's packages)."""
    python = NUMPY2_VENV / "bin" / "python"
    assert python.is_file(), f"{NUMPY2_VENV} missing: scripts/setup.sh makes it (the README's test command runs it)"
    env = {**os.environ, "VIRTUAL_ENV": str(NUMPY2_VENV),
           "PATH": f"{NUMPY2_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(python), "-c", RUNNER, "-p", "no:cacheprovider", "-q", "--rootdir", str(rootdir), *args]
    return subprocess.run(command, cwd=TEST, env=env, capture_output=True, text=True, timeout=600)


def test_the_ros_free_layers_pass_on_numpy_2():
    """The leg's tests pass in <venv>-numpy2 on numpy 2.x, with no ROS module loaded; it prints the versions."""
    for node in LEG + DESELECT:
        assert (TEST / node.split("::")[0]).is_file(), node
    args = [str(TEST / n) for n in LEG] + [a for n in DESELECT for a in ("--deselect", f"test/{n}")]
    res = run_leg(args, REPO)
    tail = res.stdout[-4000:] + res.stderr[-2000:]
    print(tail)
    versions = next((line for line in res.stdout.splitlines() if line.startswith("versions: numpy ")), "")
    assert versions.startswith("versions: numpy 2.") and str(NUMPY2_VENV) in versions, tail
    assert res.returncode == 0, tail
    assert " passed" in res.stdout and " failed" not in res.stdout and f"{len(DESELECT)} deselected" in res.stdout, tail
    assert "ROS modules imported: []" in res.stdout, tail


def npy201(*paths: str | Path) -> subprocess.CompletedProcess:
    """Ruff's numpy-2 migration rule (NPY201: np.float_, np.NaN, np.product, np.in1d, ...) on paths."""
    ruff = shutil.which("ruff")
    assert ruff
    return subprocess.run([ruff, "check", "--isolated", "--no-cache", "--output-format", "concise", "--select",
                           "NPY201", *map(str, paths)], cwd=REPO, capture_output=True, text=True)


def test_no_numpy_api_removed_in_numpy_2_anywhere():
    """What the leg cannot run (ros/, the bag, benchmarks, launch) is held to numpy 2's API statically."""
    out = npy201("da3_ros", "benchmarks", "launch", "test")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_leg_fails_on_numpy_1_only_code(tmp_path):
    """The leg can fail: np.float_ (gone in numpy 2) is flagged statically and fails in the numpy-2 venv."""
    test = tmp_path / "test_old_numpy.py"
    test.write_text("import numpy as np\n\n\ndef test_float_():\n    assert np.float_(1.5) == 1.5\n")
    assert npy201(test).returncode == 1 and "NPY201" in npy201(test).stdout
    res = run_leg([str(test)], tmp_path)
    assert res.returncode == 1 and "1 failed" in res.stdout and "np.float_` was removed" in res.stdout, res.stdout
    assert "versions: numpy 2." in res.stdout
