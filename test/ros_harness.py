"""Real processes over real Fast DDS: the node and the player as subprocesses, the test process as checker.

Each test gets its own ROS_DOMAIN_ID; discovery stays on localhost; the project's Fast DDS profile is used.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import rclpy
import yaml
from rclpy.context import Context
from rclpy.node import Node

from da3_ros.ros.diagnostics import numeric_values
from da3_ros.ros.ros_main import package_executable

REPO = Path(__file__).resolve().parents[1]


def _domain_ids():
    """ROS_DOMAIN_IDs cycling through DA3_TEST_DOMAINS ("lo-hi", default 20-101: all safe with Fast DDS).

    Two test runs on one machine keep apart by giving each its own range.
    Under pytest-xdist each worker takes its own slice of the range, so two workers never share a domain.
    """
    lo, hi = (int(v) for v in os.environ.get("DA3_TEST_DOMAINS", "20-101").split("-"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        w, size = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw")), (hi - lo + 1) // workers
        lo, hi = lo + w * size, lo + (w + 1) * size - 1
    start = os.getpid() % (hi - lo + 1)
    return (lo + (start + k) % (hi - lo + 1) for k in itertools.count())


_domains = _domain_ids()


def ros_env(domain_id: int) -> dict:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds_profile.xml"))
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def write_params(path: Path, node_name: str, params: dict) -> Path:
    path.write_text(yaml.safe_dump({node_name: {"ros__parameters": params}}))
    return path


@contextmanager
def process(exe: str, params_file: Path, domain_id: int, log: Path, extra: list[str] = ()):
    """Run an installed executable with a params file; stop it with SIGINT, then kill."""
    path = package_executable(exe)
    with open(log, "w") as f:
        proc = subprocess.Popen([path, "--ros-args", "--params-file", str(params_file), *extra],
                                env=ros_env(domain_id), stdout=f, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Checker:
    """An rclpy node in the test process, on the test's domain."""

    def __init__(self, domain_id: int):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("checker", context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def collect(self, msg_type, topic: str, qos=10) -> list:
        got: list = []
        self.node.create_subscription(msg_type, topic, got.append, qos)
        return got

    def spin_until(self, condition, timeout_s: float, what: str = "condition") -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
            if condition():
                return
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def publish_until(self, pub, make_msg, condition, timeout_s: float, what: str, period_s: float = 0.3) -> None:
        """Publish ``make_msg()`` every ``period_s`` until ``condition()``.

        One message can be lost while discovery is still completing (the node may not yet see our
        subscribers or our publisher), so a single publish would make a flaky test.
        """
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            pub.publish(make_msg())
            self.spin_for(period_s)
            if condition():
                return
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


diag_values = numeric_values  # the numeric values of the node's status
