"""Processes of this package: the common ``main`` of its rclpy nodes, and where its executables live."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def run(node_factory: Callable[[], Node], args=None, name: str = "da3_ros") -> int:
    """Init rclpy, build the node, spin until Ctrl-C or shutdown; a node that cannot start exits 1."""
    rclpy.init(args=args)
    try:
        node = node_factory()
    except Exception as exc:  # bad parameters, unreadable model: say why instead of a traceback
        print(f"[{name}] cannot start: {type(exc).__name__}: {exc}", flush=True)
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def package_executable(name: str) -> str:
    """Where `ros2 run da3_ros <name>` finds it: <prefix>/lib/da3_ros on AMENT_PREFIX_PATH, else PATH."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        candidate = Path(prefix) / "lib" / "da3_ros" / name
        if prefix and candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found under AMENT_PREFIX_PATH/lib/da3_ros nor on PATH; "
                                "build the package and source its environment")
    return found
