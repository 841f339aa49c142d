"""Static checks of launch/, config/*.yaml and config/da3.rviz (launch/launch_ros are not needed)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from da3_ros.core.param_file import flatten
from da3_ros.core.params import NODE_PARAMS, all_param_names, check_values

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
YAML_FILES = sorted(CONFIG.glob("*.yaml"))


def player_param_names() -> set[str]:
    from da3_ros.ros.player import PLAYER_PARAMS

    return set(PLAYER_PARAMS)


def node_output_topics() -> set[str]:
    """Relative topics the node publishes per camera and set-wide (da3_ros.ros.emit, what node and bag emit)."""
    from da3_ros.ros import emit

    return {topic for topic, _ in emit.PER_CAMERA_OUTPUTS.values()}


def ros_params(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict) and len(doc) == 1, f"{path.name}: expected one node section"
    (section,) = doc.values()
    assert "/**" in doc, f"{path.name}: use the '/**:' wildcard section"
    assert isinstance(section, dict) and set(section) == {"ros__parameters"}, f"{path.name}: no ros__parameters"
    return flatten(section["ros__parameters"])


def is_player_file(params: dict) -> bool:
    return "sources" in params


def test_helpers_see_the_sources():
    assert {"camera_names", "sources", "rate_hz", "qos"} <= player_param_names()
    assert {"depth/image", "confidence/image", "points"} <= node_output_topics()
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_expected_files_exist():
    names = {p.name for p in YAML_FILES}
    assert {"mono.yaml", "stereo.yaml", "surround4.yaml", "demo_rig.yaml", "demo_player.yaml"} <= names
    assert {p.name for p in LAUNCH_FILES} >= {"single_camera.launch.py", "rig.launch.py"}
    assert (CONFIG / "da3.rviz").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_param_file(path: Path):
    params = ros_params(path)
    if is_player_file(params):
        unknown = set(params) - player_param_names()
        assert not unknown, f"{path.name}: not rig_player parameters: {sorted(unknown)}"
        assert len(params["sources"]) == len(params["camera_names"]), f"{path.name}: one source per camera"
        for s in params["sources"]:
            assert re.fullmatch(r"(video|image):.+", s), f"{path.name}: bad source {s!r}"
        return
    cams = params.get("camera_names", ["camera"])
    assert cams and len(set(cams)) == len(cams), f"{path.name}: camera_names empty or repeated"
    unknown = set(params) - all_param_names(cams)
    assert not unknown, f"{path.name}: unknown node parameters: {sorted(unknown)}"
    ref = params.get("reference_camera", "")
    assert ref == "" or ref in cams, f"{path.name}: reference_camera {ref!r} not in {cams}"
    for c in cams:
        pose = params.get(f"cameras.{c}.T_ref_cam")
        assert pose is None or len(pose) == 7, f"{path.name}: cameras.{c}.T_ref_cam needs 7 numbers"
    assert not check_values(params, cams), f"{path.name}: {check_values(params, cams)}"
    defaults = {p.name: p.default for p in NODE_PARAMS}
    for k, v in params.items():  # a value's type matches the declared default's (ints pass as floats)
        if k in defaults and defaults[k] is not None:
            want = type(defaults[k])
            ok = isinstance(v, want) or (want is float and isinstance(v, int) and not isinstance(v, bool))
            assert ok, f"{path.name}: {k}={v!r} should be {want.__name__}"


def test_specific_rigs():
    stereo = ros_params(CONFIG / "stereo.yaml")
    assert stereo["camera_names"] == ["left", "right"] and stereo["reference_camera"] == "left"
    assert stereo["sync.mode"] == "exact"
    assert stereo["cameras.right.T_ref_cam"] == [0.12, 0, 0, 0, 0, 0, 1]
    surround = ros_params(CONFIG / "surround4.yaml")
    assert surround["camera_names"] == ["front", "left", "right", "rear"]
    assert surround["sync.mode"] == "approximate" and surround["sync.slop_s"] == pytest.approx(0.03)
    demo, player = ros_params(CONFIG / "demo_rig.yaml"), ros_params(CONFIG / "demo_player.yaml")
    assert demo["model"] == "random:da3-small" and demo["cloud.stride"] == 2
    assert demo["camera_names"] == player["camera_names"] == ["front", "left", "right"]


# ---- launch files --------------------------------------------------------------------------------------------

def call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def first_str_arg(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def kwarg(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def launch_tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_structure(path: Path):
    tree = launch_tree(path)
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs, f"{path.name}: no generate_launch_description()"
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    declared = [first_str_arg(c) for c in calls if call_name(c) == "DeclareLaunchArgument"]
    used = {first_str_arg(c) for c in calls if call_name(c) == "LaunchConfiguration"}
    assert None not in declared and None not in used, f"{path.name}: argument names must be literals"
    assert len(declared) == len(set(declared)), f"{path.name}: argument declared twice"
    assert used <= set(declared), f"{path.name}: undeclared arguments {sorted(used - set(declared))}"
    assert set(declared) <= used, f"{path.name}: declared but unused {sorted(set(declared) - used)}"
    referenced = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                  and re.fullmatch(r"[\w.-]+\.(yaml|rviz)", n.value)}
    missing = {r for r in referenced if not (CONFIG / r).is_file()}
    assert not missing, f"{path.name}: references missing config files {sorted(missing)}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_node_parameters(path: Path):
    tree = launch_tree(path)
    referenced = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                  and re.fullmatch(r"[\w.-]+\.yaml", n.value)]
    cams = {c for r in referenced if (CONFIG / r).is_file()
            for c in ros_params(CONFIG / r).get("camera_names", [])}
    nodes = [c for c in ast.walk(tree) if call_name(c) in ("Node", "LifecycleNode")]
    assert nodes, f"{path.name}: starts no Node"
    valid = {"depth_node": all_param_names(sorted(cams)), "depth_lifecycle_node": all_param_names(sorted(cams)),
             "rig_player": player_param_names()}
    for node in nodes:
        exe = kwarg(node, "executable")
        assert isinstance(exe, ast.Constant), f"{path.name}: executable must be a literal"
        if kwarg(node, "package").value != "da3_ros":
            continue
        assert exe.value in valid, f"{path.name}: da3_ros has no executable {exe.value!r}"
        params = kwarg(node, "parameters")
        if params is None:
            continue
        assert isinstance(params, ast.List), f"{path.name}: parameters must be a list literal"
        for item in params.elts:
            if isinstance(item, ast.Dict):
                keys = {k.value for k in item.keys}
                unknown = keys - valid[exe.value]
                assert not unknown, f"{path.name}: {exe.value} has no parameters {sorted(unknown)}"


def test_launch_defaults():
    single = launch_tree(REPO / "launch" / "single_camera.launch.py")
    decl = {first_str_arg(c): kwarg(c, "default_value") for c in ast.walk(single)
            if call_name(c) == "DeclareLaunchArgument"}
    lit = {k: v.value for k, v in decl.items() if isinstance(v, ast.Constant)}
    # empty = not given: a params file's model/backend/device/topics are never overridden by launch defaults
    assert lit == {"model": "", "backend": "", "device": "", "namespace": "", "image_topic": "",
                   "camera_info_topic": ""}
    assert "mono.yaml" in ast.dump(decl["params_file"])
    rig = launch_tree(REPO / "launch" / "rig.launch.py")
    decl = {first_str_arg(c): kwarg(c, "default_value")
            for c in ast.walk(rig) if call_name(c) == "DeclareLaunchArgument"}
    assert {"rig_file", "model", "backend", "device", "namespace", "use_player", "player_file", "examples_dir",
            "rviz"} <= set(decl)
    assert decl["use_player"].value == "false" and decl["rviz"].value == "false"
    assert decl["model"].value == decl["backend"].value == decl["device"].value == decl["examples_dir"].value == ""
    assert "stereo.yaml" in ast.dump(decl["rig_file"]) and "demo_player.yaml" in ast.dump(decl["player_file"])


# ---- rviz ----------------------------------------------------------------------------------------------------

def test_rviz_config():
    cfg = yaml.safe_load((CONFIG / "da3.rviz").read_text())
    vm = cfg["Visualization Manager"]
    assert "Panels" in cfg and vm["Global Options"]["Fixed Frame"] == "front_optical_frame"
    displays = vm["Displays"]
    classes = [d["Class"] for d in displays]
    assert all(c.startswith("rviz_default_plugins/") for c in classes), classes
    for c in ("Grid", "TF", "PointCloud2", "Image"):
        assert f"rviz_default_plugins/{c}" in classes, f"no {c} display"
    per_cam, set_wide = node_output_topics(), {"points_fused", "multiview_depth"}
    for d in displays:
        topic = d.get("Topic", {}).get("Value")
        if topic is None:
            continue
        cam, _, rest = topic.partition("/")
        assert topic in set_wide or rest in per_cam, f"rviz topic {topic!r} is not published by the node"
    fused = next(d for d in displays if d.get("Topic", {}).get("Value") == "points_fused")
    assert fused["Enabled"] and fused["Color Transformer"] == "RGB8" and fused["Size (m)"] == pytest.approx(0.01)
    per_camera_clouds = [d for d in displays if d.get("Topic", {}).get("Value", "").endswith("/points")]
    assert per_camera_clouds and not any(d["Enabled"] for d in per_camera_clouds)
    images = {d["Topic"]["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image"}
    assert images == {"front/depth/image", "front/confidence/image"}


def test_nav2_example_points_at_our_outputs():
    """config/nav2/costmap.yaml: its observation sources are topics the node publishes, with their types."""
    doc = yaml.safe_load((CONFIG / "nav2" / "costmap.yaml").read_text())
    sources = {}
    for costmap in ("local_costmap", "global_costmap"):
        for layer in doc[costmap][costmap]["ros__parameters"].values():
            if isinstance(layer, dict) and "observation_sources" in layer:
                sources.update({n: layer[n] for n in layer["observation_sources"].split()})
    assert {(s["topic"], s["data_type"]) for s in sources.values()} == {("/points_obstacles", "PointCloud2"),
                                                                          ("/scan", "LaserScan")}
    from da3_ros.ros import emit

    assert {emit.OBSTACLES, emit.SCAN} == {"points_obstacles", "scan"}  # the emitter's topic names
    assert doc["lifecycle_manager_da3"]["ros__parameters"]["node_names"] == ["da3_depth"]


# ---- what the launch files decide (da3_ros.ros.launch_helpers, called from their OpaqueFunctions) ----------------

@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_ends_with_the_node_and_checks_its_file(path: Path):
    """The depth node's action shuts launch down when it exits; its parameter file is checked (node_params)."""
    tree = launch_tree(path)
    nodes = [c for c in ast.walk(tree) if call_name(c) in ("Node", "LifecycleNode")
             and getattr(kwarg(c, "executable"), "value", "").startswith("depth_")]
    assert nodes, f"{path.name}: no depth node"
    for node in nodes:
        on_exit = kwarg(node, "on_exit")
        # A LifecycleNode makes launch_ros start its ROS adapter: a plain Shutdown on exit during a shutdown
        # (Ctrl-C) shuts that adapter down twice and launch exits 1 (test_launch_run.py runs it for real)
        want = "ShutdownOnce" if call_name(node) == "LifecycleNode" else "Shutdown"
        assert on_exit is not None and call_name(on_exit) == want, f"{path.name}: no on_exit={want}()"
    if "ShutdownOnce" in {call_name(c) for c in ast.walk(tree)}:
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ShutdownOnce")
        assert "context.is_shutdown" in ast.unparse(cls), f"{path.name}: ShutdownOnce must skip during a shutdown"
    assert "node_params" in {call_name(c) for c in ast.walk(tree)}, f"{path.name}: parameter file not checked"


def test_missing_parameter_files_fail_loudly(tmp_path):
    from da3_ros.ros.launch_helpers import LaunchArgumentError, existing_file, node_params

    with pytest.raises(LaunchArgumentError, match="rig_file:=/no/such.yaml does not exist"):
        node_params("/no/such.yaml", "rig_file")
    with pytest.raises(LaunchArgumentError, match="params_file is empty"):
        existing_file("", "params_file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("other_node:\n  ros__parameters: {model: x}\n")
    with pytest.raises(LaunchArgumentError, match="rig_file: .*none for this node"):
        node_params(str(bad), "rig_file")
    assert node_params(str(CONFIG / "stereo.yaml"), "rig_file")["camera_names"] == ["left", "right"]


def test_only_given_arguments_override_the_file():
    from da3_ros.ros.launch_helpers import given

    assert given({"model": "", "backend": "", "device": "cuda"}) == {"device": "cuda"}


def test_single_camera_topics_go_to_the_files_camera():
    from da3_ros.ros.launch_helpers import LaunchArgumentError, single_camera_overrides

    mono = ros_params(CONFIG / "mono.yaml")
    (camera,) = mono.get("camera_names", ["camera"])
    assert single_camera_overrides(mono, "/cam/color/image_raw", "") == {
        f"cameras.{camera}.image_topic": "/cam/color/image_raw"}
    assert single_camera_overrides({"camera_names": ["front"]}, "/a/image", "/a/info") == {
        "cameras.front.image_topic": "/a/image", "cameras.front.camera_info_topic": "/a/info"}
    assert single_camera_overrides({}, "", "") == {}  # the node's default camera, nothing given
    with pytest.raises(LaunchArgumentError, match="names 2 cameras"):
        single_camera_overrides(ros_params(CONFIG / "stereo.yaml"), "/a", "")


def test_player_sources_resolve_from_examples_dir(tmp_path, monkeypatch):
    from conftest import EXAMPLES
    from da3_ros.ros.launch_helpers import LaunchArgumentError, player_examples_dir

    monkeypatch.delenv("DA3_EXAMPLES", raising=False)
    player = str(CONFIG / "demo_player.yaml")
    with pytest.raises(LaunchArgumentError, match="set examples_dir:="):
        player_examples_dir(player, "")
    with pytest.raises(LaunchArgumentError, match="sources not found"):
        player_examples_dir(player, str(tmp_path))
    assert player_examples_dir(player, str(EXAMPLES)) == str(EXAMPLES)
    monkeypatch.setenv("DA3_EXAMPLES", str(EXAMPLES))
    assert player_examples_dir(player, "") == str(EXAMPLES)


@pytest.mark.parametrize("rig", ["stereo.yaml", "demo_rig.yaml", "surround4.yaml", "mono.yaml"])
def test_rviz_config_follows_the_rig(rig):
    """The rviz fixed frame is a frame the rig publishes (its reference camera's); its topics are the rig's."""
    from da3_ros.ros.launch_helpers import reference_camera_frame, write_rviz_config

    params = ros_params(CONFIG / rig)
    camera, frame = reference_camera_frame(params)
    cams = params.get("camera_names", ["camera"])
    assert camera == (params.get("reference_camera") or cams[0]) and frame == f"{camera}_optical_frame"
    path = Path(write_rviz_config(str(CONFIG / "da3.rviz"), params))
    try:
        cfg = yaml.safe_load(path.read_text())
    finally:
        path.unlink()
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == frame
    topics = {d["Topic"]["Value"] for d in vm["Displays"] if "Topic" in d}
    assert topics == {"points_fused", f"{camera}/depth/image", f"{camera}/confidence/image"} | {
        f"{c}/points" for c in cams}, topics
    names = [d["Name"] for d in vm["Displays"]]
    assert len(names) == len(set(names)) and f"{camera} depth" in names
    assert reference_camera_frame({"camera_names": ["a"], "cameras.a.frame_id": "cam_a"}) == ("a", "cam_a")


# ---- Foxglove and nvblox examples --------------------------------------------------------------------------------

def _set_wide_outputs() -> set[str]:
    from da3_ros.ros import emit

    return {emit.FUSED, emit.OBSTACLES, emit.SCAN, emit.MULTIVIEW}


def _is_output(topic: str, cameras: list[str]) -> bool:
    """A topic (absolute, no namespace) the node publishes for these cameras."""
    cam, _, rest = topic.lstrip("/").partition("/")
    return topic.lstrip("/") in _set_wide_outputs() or (cam in cameras and rest in node_output_topics())


def test_foxglove_layout_shows_our_outputs():
    """config/foxglove/da3_stereo.json: every panel in the layout tree is configured, every topic is ours."""
    import json

    doc = json.loads((CONFIG / "foxglove" / "da3_stereo.json").read_text())
    cameras = ros_params(CONFIG / "stereo.yaml")["camera_names"]

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(node["second"])

    panels = doc["configById"]
    assert sorted(leaves(doc["layout"])) == sorted(panels)
    topics = set(panels["3D!da3fused"]["topics"])
    images = [cfg["imageMode"] for pid, cfg in panels.items() if pid.startswith("Image!")]
    topics |= {m["imageTopic"] for m in images} | {m["calibrationTopic"] for m in images}
    bad = [t for t in topics if not _is_output(t, cameras)]
    assert not bad, f"not published by the node for cameras {cameras}: {bad}"
    assert panels["3D!da3fused"]["topics"]["/points_fused"]["visible"]
    assert {f"/{c}/depth/image" for c in cameras} <= {m["imageTopic"] for m in images}
    assert all(m["calibrationTopic"].endswith("/depth/camera_info") for m in images)  # K of the depth image


def test_nvblox_example_reads_our_depth():
    """config/nvblox/nvblox_stereo.yaml: its documented remappings give each nvblox camera our depth and K."""
    path = CONFIG / "nvblox" / "nvblox_stereo.yaml"
    remaps = dict(re.findall(r"-r (\S+):=(\S+)", path.read_text()))
    params = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    cameras = ros_params(CONFIG / "stereo.yaml")["camera_names"]
    n = params["num_cameras"]
    assert n == len(cameras) and params["use_depth"] and not params["use_lidar"]
    want = {f"camera_{i}/depth/{kind}" for i in range(n) for kind in ("image", "camera_info")}
    assert set(remaps) == want
    for i, cam in enumerate(cameras):
        assert remaps[f"camera_{i}/depth/image"] == f"/{cam}/depth/image"
        assert remaps[f"camera_{i}/depth/camera_info"] == f"/{cam}/depth/camera_info"
    assert all(_is_output(t, cameras) for t in remaps.values())
