"""Faults over real Fast DDS: a camera that goes silent and comes back."""
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from conftest import EXAMPLES
from da3_ros.msg import MultiViewDepth
from ros_harness import process, write_params

PHOTOS = [f"image:{EXAMPLES / 'SOH_000.png'}", f"image:{EXAMPLES / 'SOH_010.png'}"]
VIDEO = f"video:{EXAMPLES / 'robot_unitree.mp4'}"


def _values(diags) -> dict[str, str]:
    return {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}


def _stamp_s(header) -> float:
    return header.stamp.sec + 1e-9 * header.stamp.nanosec


def test_a_silent_camera_does_not_stop_the_rig_and_is_taken_back(tmp_path, domain_id, checker):
    """3 cameras; `front` stops, then comes back.

    While it is silent, sets go on with left+right (a 2-view forward) and /diagnostics names it; back, 3-view
    sets again. Every published set's stamps lie within the slop (no stale frame).
    """
    slop_s = 0.3
    node = write_params(tmp_path / "node.yaml", "da3_depth", {
        "model": "random:da3-small@0", "backend": "torch", "process_res": 140,
        "camera_names": ["left", "right", "front"], "sync.slop_s": slop_s, "sync.camera_timeout_s": 1.5,
        "diagnostics_period_s": 0.5})
    stereo = write_params(tmp_path / "stereo.yaml", "rig_player", {
        "camera_names": ["left", "right"], "sources": PHOTOS, "rate_hz": 2.0})
    front = {"camera_names": ["front"], "sources": [VIDEO], "rate_hz": 2.0}
    front1 = write_params(tmp_path / "front1.yaml", "front_player", {**front, "max_frames": 8})
    front2 = write_params(tmp_path / "front2.yaml", "front_player2", front)
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")

    def views(m) -> list[str]:
        return [v.camera_name for v in m.views]

    with process("depth_node", node, domain_id, tmp_path / "node.log"), \
            process("rig_player", stereo, domain_id, tmp_path / "stereo.log"), \
            process("rig_player", front1, domain_id, tmp_path / "front1.log", ["-r", "__node:=front_player"]):
        checker.spin_until(lambda: any(len(m.views) == 3 for m in mv), 120, "a 3-camera set")
        checker.spin_until(lambda: len(mv[-1].views) == 2 and _values(diags).get("silent_cameras") == "front",
                           60, "sets without the silent camera")
        assert views(mv[-1]) == ["left", "right"] and diags[-1].status[0].level == DiagnosticStatus.WARN
        n_before = len(mv)
        with process("rig_player", front2, domain_id, tmp_path / "front2.log", ["-r", "__node:=front_player2"]):
            checker.spin_until(lambda: any(len(m.views) == 3 for m in mv[n_before:]), 60, "front taken back")
            checker.spin_until(lambda: _values(diags).get("silent_cameras") == "", 30, "no silent camera")
    for m in mv:
        stamps = [_stamp_s(v.depth.header) for v in m.views]
        assert max(stamps) - min(stamps) <= slop_s + 1e-9
        assert m.reference_camera == "left" and views(m)[0] == "left"
    assert int(float(_values(diags)["partial_sets"])) >= 1 and _values(diags)["errors"] == "0"
    assert "Traceback" not in (tmp_path / "node.log").read_text()
