"""The launch files run end to end with ros2/launch and launch_ros (issue 15, item 11).

launch and launch_ros are not on PyPI: these tests run where they are importable (a ROS install, or their
sources on PYTHONPATH) and are skipped otherwise (CI); the launch files' structure is checked statically in
test_launch_config.py everywhere.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ros_harness import ros_env, write_params

pytest.importorskip("launch", reason="ros2/launch is not installable from PyPI; needs a ROS install")
pytest.importorskip("launch_ros", reason="ros2/launch_ros is not installable from PyPI; needs a ROS install")

RUN_LAUNCH = """
import sys
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

ls = LaunchService(argv=sys.argv[3:], noninteractive=sys.argv[2] == "noninteractive")
ls.include_launch_description(IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=[tuple(a.split(":=", 1)) for a in sys.argv[3:]]))
sys.exit(ls.run())
"""


def _installed_launch_file(name: str) -> str:
    from ament_index_python.packages import get_package_share_directory

    return f"{get_package_share_directory('da3_ros')}/launch/{name}"


@pytest.mark.parametrize("mode", ["terminal", "noninteractive"])
def test_ctrl_c_of_the_lifecycle_launch_exits_0(tmp_path, domain_id, mode):
    """Ctrl-C once the managed node is active: launch stops it and exits 0.

    It was 1: the node's on_exit Shutdown shut launch_ros' ROS adapter down a second time. ``terminal``: Ctrl-C
    reaches launch and the node (one process group); ``noninteractive`` (``ros2 launch --noninteractive``,
    ``kill -INT``): launch alone gets it and passes it on to the node.
    """
    rig = write_params(tmp_path / "rig.yaml", "/**", {"model": "random:da3-small@0", "backend": "torch",
                                                      "camera_names": ["cam"]})
    log = tmp_path / "launch.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", RUN_LAUNCH, _installed_launch_file("lifecycle.launch.py"),
                                 mode, f"rig_file:={rig}"], env=ros_env(domain_id), stdout=f, stderr=subprocess.STDOUT,
                                cwd="/", start_new_session=True)
    try:
        end = time.monotonic() + 180
        while "worker started" not in log.read_text():  # configured and activated by the launch file
            assert proc.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.1)
        if mode == "terminal":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert rc == 0, text
    assert "Cannot shutdown a ROS adapter" not in text and "process has finished cleanly" in text, text
    assert "escalating to 'SIGTERM'" not in text, text  # the node stopped on SIGINT itself
