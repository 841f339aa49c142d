"""What the launch files decide, as plain functions (no launch, no rclpy): tested without ``ros2 launch``.

The launch files (launch/*.launch.py) call these from their ``OpaqueFunction``s with the arguments' values;
a ``LaunchArgumentError`` raised there ends ``ros2 launch`` with its message and a non-zero exit.
"""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from da3_ros.core.param_file import ParamFileError, read_params_file

PLAYER_NODE = "rig_player"


class LaunchArgumentError(ValueError):
    """A launch argument that cannot work (a missing file, a camera that is not in the rig); says the fix."""


def existing_file(path: str, argument: str) -> str:
    """``path`` if it is a file, else LaunchArgumentError naming the argument (launch_ros only warns)."""
    if not path:
        raise LaunchArgumentError(f"{argument} is empty: give a parameter file, {argument}:=/path/to/file.yaml")
    if not Path(path).is_file():
        raise LaunchArgumentError(f"{argument}:={path} does not exist: the node would start with its built-in "
                                  f"defaults and wait forever; give an existing file ({argument}:=/path/file.yaml)")
    return path


def given(values: dict[str, str]) -> dict[str, str]:
    """The arguments actually given (empty = not given: the parameter file's value, else the node's default)."""
    return {k: v for k, v in values.items() if v != ""}


def node_params(params_file: str, argument: str, node_name: str = "da3_depth") -> dict[str, Any]:
    """Flat parameters of ``node_name`` in an existing ``params_file``; LaunchArgumentError if unreadable."""
    existing_file(params_file, argument)
    try:
        return read_params_file(params_file, node_name)
    except ParamFileError as exc:
        raise LaunchArgumentError(f"{argument}: {exc}") from None


def single_camera_overrides(params: dict[str, Any], image_topic: str, camera_info_topic: str) -> dict[str, str]:
    """``cameras.<name>.image_topic``/``camera_info_topic`` of the params file's ONE camera, for the topics given."""
    cameras = params.get("camera_names", ["camera"])
    if len(cameras) != 1:
        raise LaunchArgumentError(f"single_camera.launch.py: params_file names {len(cameras)} cameras {cameras}; "
                                  "give a file with one camera, or use rig.launch.py rig_file:=... for a rig")
    (camera,) = cameras
    return given({f"cameras.{camera}.image_topic": image_topic,
                  f"cameras.{camera}.camera_info_topic": camera_info_topic})


def player_examples_dir(player_file: str, examples_dir: str) -> str:
    """The base folder of rig_player's relative sources, checked: every source must be a readable file.

    ``examples_dir`` empty: ``$DA3_EXAMPLES``; with neither, relative sources are an error that says what to set
    (they would resolve against the directory ``ros2 launch`` was started from).
    """
    params = node_params(player_file, "player_file", PLAYER_NODE)
    base = examples_dir or os.environ.get("DA3_EXAMPLES", "")
    sources = [str(s) for s in params.get("sources", [])]
    paths = [s.partition(":")[2] for s in sources]
    relative = [p for p in paths if not os.path.isabs(p)]
    if relative and not base:
        raise LaunchArgumentError(f"player_file {player_file} has relative sources {relative}: set examples_dir:="
                                  "/path/to/da3_examples (or the DA3_EXAMPLES environment variable)")
    missing = [p for p in (os.path.join(base, p) if base else p for p in paths) if not os.path.isfile(p)]
    if missing:
        raise LaunchArgumentError(f"rig_player sources not found: {missing} (examples_dir:={base or '<unset>'})")
    return base


def reference_camera_frame(params: dict[str, Any]) -> tuple[str, str]:
    """(reference camera, its optical frame) of a rig: ``cameras.<ref>.frame_id``, else ``<ref>_optical_frame``.

    The node takes the frame from the images' headers; ``<name>_optical_frame`` is what rig_player (and the
    usual driver naming) publishes. Set ``cameras.<ref>.frame_id`` in the rig file for other names.
    """
    cameras = params.get("camera_names", ["camera"])
    ref = params.get("reference_camera") or cameras[0]
    return ref, params.get(f"cameras.{ref}.frame_id") or f"{ref}_optical_frame"


def rviz_config_for(template: str, cameras: list[str], reference: str, fixed_frame: str) -> str:
    """config/da3.rviz for a rig: the reference camera's frame fixed, its images shown, a cloud per camera.

    The per-camera cloud displays keep the template's state (disabled); set-wide displays stay as they are.
    """
    cfg = yaml.safe_load(template)
    vm = cfg["Visualization Manager"]
    vm["Global Options"]["Fixed Frame"] = fixed_frame
    displays: list[dict] = []
    cloud_template = None
    for d in vm["Displays"]:
        camera, sep, rest = d.get("Topic", {}).get("Value", "").partition("/")
        if not sep:  # set-wide (points_fused), grid, TF
            displays.append(d)
        elif rest == "points":
            cloud_template = cloud_template or d
        else:
            displays.append(_for_camera(d, camera, reference, rest))
    if cloud_template is not None:
        camera = cloud_template["Topic"]["Value"].partition("/")[0]
        displays += [_for_camera(cloud_template, camera, c, "points") for c in cameras]
    vm["Displays"] = displays
    return yaml.safe_dump(cfg, sort_keys=False)


def _for_camera(display: dict, old: str, new: str, rest: str) -> dict:
    out = copy.deepcopy(display)
    out["Topic"]["Value"] = f"{new}/{rest}"
    if str(out.get("Name", "")).startswith(old + " "):
        out["Name"] = new + out["Name"][len(old):]
    return out


def write_rviz_config(template_path: str, params: dict[str, Any]) -> str:
    """A temporary copy of ``template_path`` for this rig (``rviz_config_for``); returns its path."""
    camera, frame = reference_camera_frame(params)
    cameras = list(params.get("camera_names", ["camera"]))
    text = rviz_config_for(Path(template_path).read_text(), cameras, camera, frame)
    fd, path = tempfile.mkstemp(prefix="da3_", suffix=".rviz")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path
