"""Processes of this package: the common ``main`` of its rclpy nodes, and where its executables live."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean "fix your parameters, files or set-up": said in one line, without a traceback.

    They are typed and their message names the bad value and the fix; anything else is a bug and keeps its
    traceback. (Imported here, not at module level: players and tools use this module without the engines.)
    """
    from rclpy.exceptions import NameValidationException, ParameterException

    from da3_ros.engines.base import BackendUnavailable, EngineUnavailable
    from da3_ros.engines.parity import EngineParityError
    from da3_ros.engines.triton_engine import TritonModelError
    from da3_ros.core.errors import ConfigError
    from da3_ros.models.loading import CheckpointError
    from da3_ros.core.param_file import ParamFileError

    # Not ValueError itself: a numpy shape error or an internal check is a bug, and its traceback is the report
    return (ConfigError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
            BackendUnavailable, EngineUnavailable, EngineParityError, CheckpointError, ParameterException,
            NameValidationException, TritonModelError, ParamFileError)  # GraphMismatch is a ConfigError


def say_failure(exc: BaseException, say: Callable[[str], None], what: str) -> None:
    """Say why ``what`` failed: one line for a user error (``user_error_types``), else the traceback first."""
    if isinstance(exc, user_error_types()):  # bad parameters, unreadable model: say why, no traceback
        say(f"{what}: {type(exc).__name__}: {exc}")
    else:  # a bug: its traceback is the report
        tb = "".join(traceback.format_exception(exc)).rstrip()
        say(f"{tb}\n{what}: unexpected {type(exc).__name__} (traceback above)")


def set_failure_text(exc: BaseException) -> str:
    """What to log for a set that failed (worker, bag): a line, and a bug's traceback.

    One line for the project's typed errors (``user_error_types``) and out of memory (``failure_text``); any
    other exception is a bug: the line, then its traceback (the report a user can file).
    """
    from da3_ros.core.processor import failure_text, is_out_of_memory

    text = failure_text(exc)
    if isinstance(exc, user_error_types()) or is_out_of_memory(exc):
        return text
    tb = "".join(traceback.format_exception(exc)).rstrip()
    return f"{text} (a bug: traceback follows)\n{tb}"


def run(node_factory: Callable[[], Node], args=None, name: str = "da3_ros") -> int:
    """Init rclpy, build the node, spin until Ctrl-C or shutdown; a node that cannot start exits 1.

    A user error (``user_error_types``) at start-up is one line; any other exception keeps its traceback.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)  # before init: rclpy's handler chains to the one it finds
    rclpy.init(args=args)
    try:
        node = node_factory()
    except Exception as exc:
        say_failure(exc, lambda text: print(text, flush=True), f"[{name}] cannot start")
        rclpy.try_shutdown()  # destroys the half-built node: its destroy_node copes (class-level state)
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    _CTRL_C[:] = [0]  # spinning: Ctrl-C ends the spin through rclpy's shutdown of the context
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():  # a callback failed while running: a bug, keep its traceback
            raise
        # else a callback cut short by Ctrl-C's shutdown ("publisher's context is invalid"): the normal end
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        _end_now_if_abandoned_threads_run(0)
        _CTRL_C.clear()
    return 0


_CTRL_C: list[int] = []  # while ``run`` spins: the Ctrl-Cs received so far; empty otherwise


def _on_sigint(signum: int, frame: object) -> None:
    """Ctrl-C: a request to stop, not an exception raised wherever Python happens to be.

    rclpy's own handler runs first and shuts the context down, which ends the spin. A KeyboardInterrupt would
    land in whatever runs then, and inside a finaliser (rclpy's ``Future.__del__``) it cannot propagate: Python
    prints "Exception ignored ... Traceback". Before spinning (a model loading) and at a second Ctrl-C, it is
    Python's usual KeyboardInterrupt.
    """
    if not _CTRL_C or _CTRL_C[0] >= 1:
        raise KeyboardInterrupt
    _CTRL_C[0] += 1


_ABANDONED: list[threading.Thread] = []


def abandon_on_exit(thread: threading.Thread) -> None:
    """A daemon thread that shutdown does not wait for (a forward in flight can take seconds or minutes).

    If it is still running when ``run`` ends, the process ends at once (``os._exit``) after the clean-up that
    matters (exports, logs): finalising the interpreter under a thread inside native code (torch's pools)
    aborts it ("terminate called without an active exception", exit -6).
    """
    _ABANDONED[:] = [t for t in _ABANDONED if t.is_alive()] + [thread]


def _end_now_if_abandoned_threads_run(code: int) -> None:
    if not any(t.is_alive() for t in _ABANDONED):
        return
    if "da3_ros.engines.onnx_source" in sys.modules:  # what its atexit hook would do: no export outlives us
        sys.modules["da3_ros.engines.onnx_source"].terminate_exports()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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
