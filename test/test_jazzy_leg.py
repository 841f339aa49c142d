"""The Jazzy leg: a DDS smoke set of the node's tests again, on the ROS 2 Jazzy wheels (rclpy 7.1, Fast-RTPS 2.14).

``scripts/setup.sh`` makes ``<venv>-jazzy`` (``.venv-jazzy``): the ``ros-jazzy-*`` wheels (requirements/ros-jazzy.txt),
tf2_msgs, the video transports' messages and da3_ros (msg/ and Python) built there against Jazzy's rosidl, then the
main venv's packages after its own (torch, OpenCV, PyAV, DA3, pytest: shared). The smoke set runs in a pytest process
of that venv, whose nodes are that venv's executables; the leg fails if any ROS module or ROS library in it was
loaded from the main venv (Kilted).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import REPO

MAIN_VENV = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv"))
JAZZY_VENV = Path(f"{MAIN_VENV}-jazzy")
TEST = REPO / "test"
# start, one set, shutdown by SIGTERM (exit 0); the lifecycle node configure/activate/sets/deactivate/cleanup;
# compressed (JPEG) input with corrupt frames counted and the next good one processed; the rclpy compat module
# on a real Jazzy node. The cheapest DDS tests that cover these: ~18 s of the leg's ~25 s.
LEG = ["test_node_faults.py::test_sigterm_releases_everything_like_sigint",
       "test_node_nav.py::test_lifecycle_node_publishes_only_while_active_and_frees_the_engine",
       "test_node_compressed.py::test_corrupt_jpeg_is_counted_and_the_next_good_frame_is_processed",
       "test_rclpy_compat.py"]
RUNNER = """
import importlib.metadata, os, re, sys, pytest
rc = pytest.main(sys.argv[2:])
import rclpy
from da3_ros.ros.ros_main import package_executable
main_venv = os.path.realpath(sys.argv[1])
main_site = os.path.join(main_venv, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")
ros_name = re.compile(r"(rclpy|rcl_.*|rmw.*|rosidl_.*|rpyutils|ament_.*|rosgraph.*|da3_ros|.*_(msgs|srvs|interfaces))$")
print("versions: rclpy", importlib.metadata.version("ros-rclpy"), "from", rclpy.__file__, "| node",
      package_executable("depth_node"))
ros_from_main = sorted({name for name, mod in list(sys.modules.items()) if ros_name.match(name.split(".")[0])
                        and os.path.realpath(getattr(mod, "__file__", None) or "/").startswith(main_venv + os.sep)})
print("ROS modules from the main venv:", ros_from_main)

def ros_library(path):
    if not path.startswith(main_venv + os.sep):
        return False
    if not path.startswith(main_site + os.sep):
        return True  # <venv>/lib/*.so: the wheels' C libraries (librcl, libfastdds, ...)
    top = os.path.relpath(path, main_site).split(os.sep)[0]
    return top.startswith("ros_") or bool(ros_name.match(top))

with open("/proc/self/maps") as maps:
    mapped = {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}
print("ROS libraries from the main venv:", sorted(p for p in mapped if ros_library(os.path.realpath(p))))
print("rcl mapped:", sorted(p for p in mapped if os.path.basename(p).startswith(("librcl.so", "libfastrtps.so"))))
sys.exit(rc)
"""


def jazzy_env() -> dict:
    """The leg's environment: Jazzy's prefix only, Fast-RTPS 2's name for the project's profile.

    No trace of the Kilted wheels' library path: with their start-up guard inherited, Jazzy's would not set its own
    and rclpy fails to load (libfastrtps.so.2.14 not found, shown); without the guard, a set order mixes the two.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("_ROS_WHEELS_BOOTSTRAP_COMPLETE", "PYTHONPATH")}
    main = str(MAIN_VENV.resolve())
    libs = [p for p in env.pop("LD_LIBRARY_PATH", "").split(os.pathsep) if p and not p.startswith(main)]
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env.update(VIRTUAL_ENV=str(JAZZY_VENV), AMENT_PREFIX_PATH=str(JAZZY_VENV),
               PATH=os.pathsep.join([str(JAZZY_VENV / "bin"), str(JAZZY_VENV / "lib" / "da3_ros"),
                                     env.get("PATH", "")]),
               # Fast-RTPS 2 (Humble, Jazzy) reads this name, Fast DDS 3 (Kilted) FASTDDS_DEFAULT_PROFILES_FILE
               FASTRTPS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds_profile.xml"))
    return env


def test_the_dds_smoke_set_passes_on_the_jazzy_wheels():
    """Start/one set/SIGTERM, lifecycle, compressed input and rclpy compat pass with rclpy 7.1 from <venv>-jazzy."""
    python = JAZZY_VENV / "bin" / "python"
    assert python.is_file(), f"{JAZZY_VENV} missing: scripts/setup.sh makes it (the README's test command runs it)"
    for node in LEG:
        assert (TEST / node.split("::")[0]).is_file(), node
    command = [str(python), "-c", RUNNER, str(MAIN_VENV.resolve()), "-p", "no:cacheprovider", "-q",
               "--rootdir", str(REPO), *(str(TEST / n) for n in LEG)]
    res = subprocess.run(command, cwd=TEST, env=jazzy_env(), capture_output=True, text=True, timeout=300)
    tail = res.stdout[-4000:] + res.stderr[-2000:]
    print(tail)
    jazzy = str(JAZZY_VENV)
    versions = next((line for line in res.stdout.splitlines() if line.startswith("versions: rclpy ")), "")
    assert versions.startswith("versions: rclpy 7.1.") and versions.count(jazzy) == 2, tail
    assert res.returncode == 0 and " passed" in res.stdout and " failed" not in res.stdout, tail
    assert "ROS modules from the main venv: []" in res.stdout, tail
    assert "ROS libraries from the main venv: []" in res.stdout, tail
    rcl = next(line for line in res.stdout.splitlines() if line.startswith("rcl mapped: "))
    assert "librcl.so" in rcl and "libfastrtps.so.2" in rcl and f"{MAIN_VENV.resolve()}{os.sep}" not in rcl, tail
