"""``da3-ros bag``: a recorded rig in, a bag of the node's outputs out, read back with third-party decoders.

The input bags are written by mcap-ros2-support's own CDR encoder (not by rclpy, not by da3_ros's writer; see
da3_ros/offline/example_bag.py) from the example photos and video: a 3-camera rig (raw rgb8, JPEG CompressedImage,
raw bgr8) with camera_info and /tf_static. The output is decoded with mcap-ros2-support through the schemas
stored in the file.
"""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from std_msgs.msg import Header
import yaml
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from conftest import EXAMPLES
from test_compressed_depth import decode_compressed_depth
from da3_ros.ros import conversions as conv
from da3_ros.offline.example_bag import CAMERAS, T_RIG, write_example_bag
from da3_ros.offline.mcap_io import BagReader
from da3_ros.offline.setup import OfflineSetup
from da3_ros.core.param_file import check_params, read_params_file
from da3_ros.core.processor import Processed
from da3_ros.ros.player import pinhole_K

PARAMS = {"model": "random:da3-small@0", "backend": "torch", "process_res": 252, "camera_names": CAMERAS,
          "reference_camera": "left", "cameras": {"right": {"image_topic": "right/image_raw"}}}


def write_rig_bag(path: Path, n_sets: int, bad_encoding_at: int | None = None) -> list[dict]:
    """The example rig at half size, the video camera 3 ms late (approximate sync within sync.slop_s)."""
    return write_example_bag(path, EXAMPLES, n_sets, scale=0.5, front_offset_ns=3_000_000,
                             bad_encoding_at=bad_encoding_at)


def params_file(path: Path, **extra) -> Path:
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {**PARAMS, **extra}}}))
    return path


def read_output(path: Path) -> dict[str, list]:
    """Per topic: [(schema name, log time, decoded message)] through the schemas stored in the file."""
    out: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append((schema.name, message.log_time, decoded))
    return out


def stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def cloud_xyz(msg) -> np.ndarray:
    fields = {f.name: f.offset for f in msg.fields}
    dt = np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3,
                   "offsets": [fields["x"], fields["y"], fields["z"]], "itemsize": msg.point_step})
    return np.frombuffer(bytes(msg.data), dt, count=msg.width * msg.height)


def run_cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(["da3-ros", "bag", "--no-progress", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def rig_bag(tmp_path_factory) -> tuple[Path, list[dict]]:
    path = tmp_path_factory.mktemp("bag") / "rig.mcap"
    return path, write_rig_bag(path, 3)


def test_bag_outputs_decode_and_equal_the_core(tmp_path, rig_bag):
    """Every set of the bag processed; topics, types, stamps; depth = the core's; clouds and results decode."""
    bag, ticks = rig_bag
    out = tmp_path / "out.mcap"
    res = run_cli(bag, "--out", out, "--params-file", params_file(tmp_path / "p.yaml"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sets processed: 3 of 3" in res.stdout and "stage forward" in res.stdout
    got = read_output(out)
    expected = {f"/{c}/{t}": ty for c in CAMERAS for t, ty in (
        ("depth/image", "sensor_msgs/msg/Image"), ("depth/camera_info", "sensor_msgs/msg/CameraInfo"),
        ("depth/image/compressedDepth", "sensor_msgs/msg/CompressedImage"),
        ("confidence/image", "sensor_msgs/msg/Image"), ("points", "sensor_msgs/msg/PointCloud2"))}
    expected.update({"/points_fused": "sensor_msgs/msg/PointCloud2", "/multiview_depth": "da3_ros/msg/MultiViewDepth",
                     "/tf": "tf2_msgs/msg/TFMessage", "/tf_static": "tf2_msgs/msg/TFMessage"})
    assert {t: v[0][0] for t, v in got.items()} == expected
    for c in CAMERAS:
        stamps = [stamp_ns(m.header) for _, _, m in got[f"/{c}/depth/image"]]
        assert stamps == [tick[c][0] for tick in ticks]  # every set, each image's own stamp
        assert all(m.header.frame_id == f"{c}_optical_frame" for _, _, m in got[f"/{c}/points"])
    ref_stamps = [tick["left"][0] for tick in ticks]
    assert [stamp_ns(m.header) for _, _, m in got["/multiview_depth"]] == ref_stamps
    assert [t for _, t, _ in got["/multiview_depth"]] == ref_stamps  # log time = the set's reference stamp

    # the result message, decoded through the schema in the file
    mv = got["/multiview_depth"][-1][2]
    assert [v.camera_name for v in mv.views] == CAMERAS and mv.reference_camera == "left"
    assert "UNTRAINED" in mv.model and all(v.has_pose for v in mv.views)
    p = mv.views[1].pose.position  # conditioned on /tf_static: right is 0.25 m right of left
    np.testing.assert_allclose([p.x, p.y, p.z], [0.25, 0.0, 0.0], atol=1e-6)
    assert mv.is_metric and mv.scale_source == "rig"  # a calibrated rig gives metres offline too
    tf = {t.child_frame_id: t for _, _, m in got["/tf"] for t in m.transforms if stamp_ns(t.header) == ref_stamps[-1]}
    assert set(tf) == {f"{c}_optical_frame_da3" for c in CAMERAS}

    # depth equals what the core computes for the same set: same parameters, /tf_static, camera_info, and the
    # images as the node decodes them (the JPEG camera included)
    setup = OfflineSetup(check_params(read_params_file(tmp_path / "p.yaml"))[0])
    setup.load()
    for name, xyz in T_RIG.items():
        T = np.eye(4)
        T[:3, 3] = xyz
        setup.static_tf.add("rig", f"{name}_optical_frame", T)
    for tick in ticks:  # every set in order: the metric scale filter carries state from set to set
        headers = [Header(stamp=conv.ns_to_stamp(tick[c][0]), frame_id=f"{c}_optical_frame") for c in CAMERAS]
        images = [conv.rgb_to_image(tick[c][1], h) for c, h in zip(CAMERAS, headers)]
        cam_infos = [conv.make_camera_info(pinhole_K(tick[c][1].shape[1], tick[c][1].shape[0], 60.0),
                                           tick[c][1].shape[:2], h) for c, h in zip(CAMERAS, headers)]
        done = setup.core.process(images, cam_infos, [False] * 3)
    assert isinstance(done, Processed), done
    infos = [got[f"/{c}/depth/camera_info"][-1][2] for c in CAMERAS]
    for i, c in enumerate(CAMERAS):
        d = got[f"/{c}/depth/image"][-1][2]
        assert d.encoding == "32FC1" and (d.height, d.width) == (infos[i].height, infos[i].width)
        depth = np.frombuffer(bytes(d.data), "<f4").reshape(d.height, d.width)
        np.testing.assert_allclose(depth, done.outputs.depth_arrays[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.array(infos[i].k).reshape(3, 3), done.outputs.pred.K_proc[i], rtol=1e-9)
        packed = got[f"/{c}/depth/image/compressedDepth"][-1][2]  # image_transport's, decoded independently
        assert stamp_ns(packed.header) == stamp_ns(d.header) and decode_compressed_depth(packed)[1].shape == depth.shape
    # clouds: fields decodable; each point is its depth pixel back-projected (z = depth there)
    pc = got["/left/points"][-1][2]
    assert [f.name for f in pc.fields][:4] == ["x", "y", "z", "rgb"]
    xyz = cloud_xyz(pc)
    K = np.array(infos[0].k).reshape(3, 3)
    u = np.round(K[0, 0] * xyz["x"] / xyz["z"] + K[0, 2]).astype(int)
    v = np.round(K[1, 1] * xyz["y"] / xyz["z"] + K[1, 2]).astype(int)
    np.testing.assert_allclose(xyz["z"], done.outputs.depth_arrays[0][v, u], rtol=1e-5)
    fused = got["/points_fused"][-1][2]
    assert fused.header.frame_id == "left_optical_frame" and fused.width > pc.width


def test_every_n_start_and_duration(tmp_path, rig_bag):
    bag, ticks = rig_bag
    p = params_file(tmp_path / "p.yaml")
    res = run_cli(bag, "--out", tmp_path / "n.mcap", "--params-file", p, "--every-n", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sets processed: 2 of 3" in res.stdout and "skipped by --every-n: 1" in res.stdout
    got = read_output(tmp_path / "n.mcap")
    assert [stamp_ns(m.header) for _, _, m in got["/multiview_depth"]] == [ticks[0]["left"][0], ticks[2]["left"][0]]
    res = run_cli(bag, "--out", tmp_path / "w.mcap", "--params-file", p, "--start", "0.05", "--duration", "0.1")
    assert res.returncode == 0, res.stderr[-2000:]
    got = read_output(tmp_path / "w.mcap")
    assert [stamp_ns(m.header) for _, _, m in got["/multiview_depth"]] == [ticks[1]["left"][0]]


def test_missing_topic_is_named(tmp_path, rig_bag):
    bag, _ = rig_bag
    p = params_file(tmp_path / "p.yaml", camera_names=["left", "rear"])
    res = run_cli(bag, "--out", tmp_path / "x.mcap", "--params-file", p)
    assert res.returncode != 0
    assert "camera 'rear': no Image or CompressedImage on /rear/image_raw" in res.stderr
    assert "/left/image_raw" in res.stderr  # what the bag has
    assert not (tmp_path / "x.mcap").exists()


def test_bad_parameters_are_named(tmp_path, rig_bag):
    """The node's own parameter checks, as the node would report them; a wrong type names the parameter."""
    bag, _ = rig_bag
    res = run_cli(bag, "--out", tmp_path / "x.mcap", "--params-file", params_file(tmp_path / "p.yaml"),
                  "-p", "reference_camera:=rear")
    assert res.returncode != 0 and "reference_camera 'rear' is not in camera_names" in res.stderr
    res = run_cli(bag, "--out", tmp_path / "x.mcap", "-p", "cloud.stride:=two")
    assert res.returncode != 0 and "'cloud.stride' = 'two'" in res.stderr


def test_not_an_mcap_file(tmp_path):
    bad = tmp_path / "x.db3"
    bad.write_bytes(b"SQLite format 3\x00" + bytes(100))
    res = run_cli(bad, "--out", tmp_path / "o.mcap")
    assert res.returncode != 0 and "is not an MCAP file" in res.stderr and "ros2 bag convert" in res.stderr


def test_truncated_input_and_a_dropped_image_keep_the_results(tmp_path):
    """A bag cut mid-way: the sets before the cut are processed, the output is a valid MCAP.

    An image the node would drop (bayer encoding) is a named drop, not the end of the run.
    """
    from da3_ros.offline.bag import BagOptions, run_bag
    from da3_ros.offline.setup import load_values

    full = tmp_path / "full.mcap"
    ticks = write_rig_bag(full, 4, bad_encoding_at=0)
    data = full.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(McapError), open(cut, "rb") as f:
        list(make_reader(f).iter_messages())  # the summary-based reader gives up on it
    values = load_values(str(params_file(tmp_path / "p.yaml")))
    summary = run_bag(cut, tmp_path / "out.mcap", values, BagOptions(progress=False))
    assert summary.truncated and "truncated or damaged" in summary.truncated
    assert summary.drops["bad_input"] == 1 and "bayer_rggb8" in summary.drop_examples["bad_input"]
    got = read_output(tmp_path / "out.mcap")  # finished: summary and index present
    stamps = [stamp_ns(m.header) for _, _, m in got["/multiview_depth"]]
    assert stamps and stamps == [t["left"][0] for t in ticks[1:1 + len(stamps)]]
    assert summary.sets_processed == len(stamps) and len(stamps) < 3


def test_ctrl_c_leaves_a_readable_bag(tmp_path):
    """SIGINT after the first set: the run stops after the current set and the output is a finished MCAP."""
    bag = tmp_path / "long.mcap"
    write_rig_bag(bag, 8)
    out = tmp_path / "out.mcap"
    proc = subprocess.Popen(["da3-ros", "bag", str(bag), "--out", str(out), "--params-file",
                             str(params_file(tmp_path / "p.yaml"))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # the progress line after each set written
            if line.startswith("[bag] [") and " 1/" in line:
                break
        else:
            raise AssertionError("no progress line")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "INTERRUPTED" in stdout
    got = read_output(out)
    assert 1 <= len(got["/multiview_depth"]) < 8
    assert BagReader(out).info().has_summary


def test_a_bad_fused_frame_costs_the_bag_only_its_fused_cloud(tmp_path, rig_bag):
    """Issue 15, item 14: as the node (da3_ros.ros.emit): every other output written, counted once per set."""
    bag, ticks = rig_bag
    res = run_cli(bag, "--out", tmp_path / "f.mcap", "--params-file",
                  params_file(tmp_path / "p.yaml", fused_frame="nowhere"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sets processed: 3 of 3" in res.stdout and "withheld (errors): 3 sets" in res.stdout
    assert "dropped" not in res.stdout
    got = read_output(tmp_path / "f.mcap")
    assert "/points_fused" not in got and len(got["/multiview_depth"]) == 3
    assert all(len(got[f"/{c}/depth/image"]) == 3 and len(got[f"/{c}/points"]) == 3 for c in CAMERAS)


def test_the_bag_runs_on_openvino(tmp_path, rig_bag):
    """`da3-ros bag` on backend openvino (issue 26): every set, its start-up line says the backend, depth is finite.

    The engine is the node's (engine_from_config); its numbers against ONNX Runtime and torch are test_openvino's.
    """
    bag, ticks = rig_bag
    out = tmp_path / "out.mcap"
    res = run_cli(bag, "--out", out, "--params-file", params_file(
        tmp_path / "p.yaml", backend="openvino", precision="fp32", process_res=140,
        engine_cache_dir=str(tmp_path / "cache")))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sets processed: 3 of 3" in res.stdout and "openvino (device CPU, precision fp32)" in res.stdout + res.stderr
    got = read_output(out)
    for c in CAMERAS:
        msgs = [m for _, _, m in got[f"/{c}/depth/image"]]
        assert [stamp_ns(m.header) for m in msgs] == [tick[c][0] for tick in ticks]
        depth = np.frombuffer(bytes(msgs[-1].data), "<f4")
        assert depth.size > 0 and np.isfinite(depth).all() and (depth > 0).all()
