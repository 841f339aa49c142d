"""``da3-ros bag`` with a LiDAR topic (issue 27): every set in the sensor's metres, fitted as the node fits them.

The input bag is written by mcap-ros2-support's own CDR encoder: two cameras (the example photos, raw rgb8,
camera_info), /tf_static with the mounts of the cameras and a lidar, and a PointCloud2 per set made from the
sets' relative depth (computed here by the same core without a range sensor) x S_TRUE, with 20 % wild returns,
stamped 20 ms after its set. The output must carry scale_source "range", scale S_TRUE to 1e-6 and depth =
S_TRUE x the relative depth; a bag whose cloud frame has no transform gives relative depth and says why.
"""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap_ros2.writer import Writer as Ros2Writer

from conftest import EXAMPLES
from da3_ros.core import geometry as geo
from da3_ros.core.image_io import read_rgb
from da3_ros.core.processor import Calibration, CameraFrame, Processed
from da3_ros.offline.mcap_io import message_definition
from da3_ros.offline.setup import OfflineSetup
from da3_ros.ros.player import pinhole_K
from test_bag import read_output
from test_node_range import MOUNTS

S_TRUE = 1.75
T0_NS = 1_700_000_000 * 10**9
CAMERAS = {"front": "SOH_000.png", "back": "SOH_010.png"}
PARAMS = {"model": "random:da3-small@0", "backend": "torch", "process_res": 140, "camera_names": list(CAMERAS),
          "pose_conditioning": "off"}


def _header(stamp_ns: int, frame: str) -> dict:
    return {"stamp": {"sec": stamp_ns // 10**9, "nanosec": stamp_ns % 10**9}, "frame_id": frame}


def _cloud(points: np.ndarray, stamp_ns: int, frame: str) -> dict:
    fields = [{"name": n, "offset": 4 * i, "datatype": 7, "count": 1} for i, n in enumerate("xyz")]
    return {"header": _header(stamp_ns, frame), "height": 1, "width": len(points), "fields": fields,
            "is_bigendian": False, "point_step": 12, "row_step": 12 * len(points),
            "data": points.astype("<f4").tobytes(), "is_dense": True}


def _tf(frame: str, T: np.ndarray) -> dict:
    q = geo.quaternion_from_R(T[:3, :3])
    return {"header": _header(0, "base_link"), "child_frame_id": frame,
            "transform": {"translation": dict(zip("xyz", T[:3, 3].tolist())),
                          "rotation": dict(zip("xyzw", q.tolist()))}}


def _relative(images: dict[str, np.ndarray]):
    """The set's prediction by the same core without a range sensor: depth in the network's units, K."""
    setup = OfflineSetup(dict(PARAMS))
    setup.load()
    frames = [CameraFrame(rgb, T0_NS, f"{c}_optical_frame", Calibration(pinhole_K(rgb.shape[1], rgb.shape[0], 60.0),
                                                                       rgb.shape[:2]))
              for c, rgb in images.items()]
    done = setup.frames.process(frames)
    assert isinstance(done, Processed)
    return done.outputs.pred


def write_range_bag(path: Path, n_sets: int, cloud_frame: str = "lidar") -> np.ndarray:
    """The bag; returns the relative depth (N, H, W) the cloud was made from."""
    images = {c: read_rgb(EXAMPLES / name)[::4, ::4].copy() for c, name in CAMERAS.items()}
    pred = _relative(images)
    T_lidar_base = geo.invert_T(MOUNTS["lidar"])
    rng = np.random.default_rng(0)
    parts = []
    for i, c in enumerate(CAMERAS):
        p, _ = geo.backproject(pred.depth[i] * S_TRUE, pred.K_of(i))
        wild = rng.random(len(p)) < 0.2
        p[wild] *= rng.choice([0.4, 2.2], (int(wild.sum()), 1))
        parts.append(geo.transform_points(T_lidar_base @ MOUNTS[f"{c}_optical_frame"], p))
    points = np.concatenate(parts)
    with open(path, "wb") as f:
        w = Ros2Writer(f)
        schemas = {t: w.register_msgdef(t, message_definition(t)) for t in (
            "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/PointCloud2",
            "tf2_msgs/msg/TFMessage")}
        w.write_message("/tf_static", schemas["tf2_msgs/msg/TFMessage"],
                        {"transforms": [_tf(frame, T) for frame, T in MOUNTS.items()]}, log_time=T0_NS - 10**6)
        for k in range(n_sets):
            stamp = T0_NS + k * 100_000_000
            for c, rgb in images.items():
                h, wd = rgb.shape[:2]
                K = pinhole_K(wd, h, 60.0)
                w.write_message(f"/{c}/camera_info", schemas["sensor_msgs/msg/CameraInfo"], {
                    "header": _header(stamp, f"{c}_optical_frame"), "height": h, "width": wd,
                    "distortion_model": "plumb_bob", "d": [0.0] * 5, "k": K.ravel().tolist(),
                    "r": np.eye(3).ravel().tolist(), "p": np.hstack([K, np.zeros((3, 1))]).ravel().tolist()},
                    log_time=stamp + 10**6)
            # the sensor's message recorded before the set completes, stamped 20 ms after the images
            w.write_message("/lidar/points", schemas["sensor_msgs/msg/PointCloud2"],
                            _cloud(points, stamp + 20_000_000, cloud_frame), log_time=stamp + 2 * 10**6)
            for c, rgb in images.items():
                h, wd = rgb.shape[:2]
                w.write_message(f"/{c}/image_raw", schemas["sensor_msgs/msg/Image"], {
                    "header": _header(stamp, f"{c}_optical_frame"), "height": h, "width": wd, "encoding": "rgb8",
                    "is_bigendian": 0, "step": wd * 3, "data": rgb.tobytes()}, log_time=stamp + 3 * 10**6)
        w.finish()
    return pred.depth


def _run(tmp_path: Path, bag: Path) -> tuple[subprocess.CompletedProcess, dict]:
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        **PARAMS, "metric.range_topics": ["cloud:/lidar/points"], "metric.range_slop_s": 0.05}}}))
    out = tmp_path / "out.mcap"
    res = subprocess.run(["da3-ros", "bag", "--no-progress", str(bag), "--out", str(out), "--params-file",
                          str(params)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res, read_output(out)


def test_a_bag_with_a_lidar_topic_is_in_the_lidar_s_metres(tmp_path):
    relative = write_range_bag(tmp_path / "in.mcap", 3)
    res, got = _run(tmp_path, tmp_path / "in.mcap")
    results = [m for _, _, m in got["/multiview_depth"]]
    assert len(results) == 3 and "range scale: 3 sets fitted" in res.stdout, res.stdout
    for mv in results:
        assert mv.scale_source == "range" and mv.is_metric
        assert mv.scale_raw == pytest.approx(S_TRUE, rel=1e-6) and mv.scale == pytest.approx(S_TRUE, rel=1e-6)
    for i, c in enumerate(CAMERAS):
        depth = got[f"/{c}/depth/image"][-1][2]
        array = np.frombuffer(bytes(depth.data), "<f4").reshape(depth.height, depth.width)
        np.testing.assert_allclose(array, relative[i] * S_TRUE, rtol=1e-5)


def test_a_bag_whose_sensor_has_no_transform_stays_relative_and_says_why(tmp_path):
    write_range_bag(tmp_path / "in.mcap", 2, cloud_frame="velodyne")
    res, got = _run(tmp_path, tmp_path / "in.mcap")
    results = [m for _, _, m in got["/multiview_depth"]]
    assert len(results) == 2 and all(not m.is_metric and math.isnan(m.scale_raw) for m in results)
    assert "range scale: 0 sets fitted, 2 without one" in res.stdout and "'velodyne' -> " in res.stdout
