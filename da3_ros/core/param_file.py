"""The node's parameter file without a node: ``--params-file`` for ``da3-ros bag`` and ``da3-ros media``.

Reads a ROS 2 parameter YAML (``/**:`` and/or ``<node>:`` sections, each with ``ros__parameters``; nested keys
become dotted names, as ``--ros-args --params-file`` does) and checks names and types against the node's one
table, ``da3_ros.core.params``. ROS-free.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from da3_ros.core.params import CAMERA_PARAMS, NODE_PARAMS, all_param_names, check_values, normalized

NODE_NAME = "da3_depth"


class ParamFileError(ValueError):
    """A parameter file or override that the node would not accept."""


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested YAML parameters -> ``{"a.b.c": value}``, the names ROS gives them."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_params_file(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """Flat ``{name: value}`` of the sections that apply to ``node_name``: ``/**`` first, the node's own last."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ParamFileError(f"cannot read parameter file {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ParamFileError(f"parameter file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ParamFileError(f"parameter file {str(path)!r}: expected sections like '/**:' or '{node_name}:'")
    names = ("/**", "**", f"/**/{node_name}", node_name, f"/{node_name}")
    found = [k for k in names if k in doc]
    if not found:
        raise ParamFileError(f"parameter file {str(path)!r} has sections {list(doc)}, none for this node: use "
                             f"'/**:' or '{node_name}:' with 'ros__parameters:' under it")
    values: dict[str, Any] = {}
    for k in found:
        section = doc[k]
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ParamFileError(f"parameter file {str(path)!r}: section {k!r} needs 'ros__parameters:'")
        values.update(flatten(section["ros__parameters"]))
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``name:=value`` (value in YAML, as ``-p name:=value``) -> (name, value)."""
    name, sep, raw = text.partition(":=")
    if not sep or not name:
        raise ParamFileError(f"--param wants name:=value (e.g. backend:=torch), got {text!r}")
    return name.strip(), yaml.safe_load(raw) if raw.strip() else ""


def _default(name: str) -> tuple[bool, Any]:
    for p in NODE_PARAMS:
        if p.name == name:
            return True, p.default
    field = name.rsplit(".", 1)[-1]
    for p in CAMERA_PARAMS:
        if p.name == field:
            return True, p.default
    return False, None


def _coerce(name: str, value: Any, default: Any) -> Any:
    """The value as the node would take it (an integer for a double is accepted); ParamFileError otherwise."""
    value = normalized(name, value)  # an unquoted `tf.mode: off` is the boolean false: off
    if isinstance(value, bool) and isinstance(default, str) and check_values({name: value}):
        raise ParamFileError(check_values({name: value})[0])  # true for a choice: the message says to quote it
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
        if ok and (not default or isinstance(default[0], float)) and name.endswith("T_ref_cam"):
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            value = [float(v) for v in value] if ok else value
    else:
        ok = True
    if not ok:
        raise ParamFileError(f"parameter {name!r} = {value!r} has type {type(value).__name__}; the node declares it "
                             f"as {type(default).__name__} (default {default!r})")
    return value


def check_params(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Typed values and the names the node would ignore (not declared for its ``camera_names``)."""
    cameras = values.get("camera_names", [p.default for p in NODE_PARAMS if p.name == "camera_names"][0])
    if not isinstance(cameras, list) or not all(isinstance(c, str) for c in cameras):
        raise ParamFileError(f"camera_names must be a list of names, got {cameras!r}")
    known = all_param_names(cameras)
    out, unknown = {}, []
    for name, value in values.items():
        if name not in known:
            unknown.append(name)
            continue
        out[name] = _coerce(name, value, _default(name)[1])
    return out, sorted(unknown)
