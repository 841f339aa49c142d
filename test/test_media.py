"""``da3-ros media``: the example video and an image folder as a 2-camera rig; npz, PNG and PLY per set."""
from __future__ import annotations

import subprocess

import cv2
import numpy as np
import yaml
from plyfile import PlyData

from conftest import EXAMPLES
from da3_ros.core import geometry as geo
from da3_ros.core import preprocess
from da3_ros.ros.player import pinhole_K


def test_media_video_and_image_folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("SOH_000.png", "SOH_010.png"):  # linked, not copied
        (photos / name).symlink_to(EXAMPLES / name)
    sizes = {"front": (576, 1024), "left": (680, 1208)}
    Ks = {c: pinhole_K(wd, h, 60.0 if c == "front" else 50.0) for c, (h, wd) in sizes.items()}
    for c, K in Ks.items():  # the ROS calibration format (camera_calibration_parsers)
        (tmp_path / f"{c}.yaml").write_text(yaml.safe_dump({
            "image_width": sizes[c][1], "image_height": sizes[c][0], "camera_name": c,
            "camera_matrix": {"rows": 3, "cols": 3, "data": K.ravel().tolist()}, "distortion_model": "plumb_bob",
            "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5},
            "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).ravel().tolist()},
            "projection_matrix": {"rows": 3, "cols": 4, "data": np.hstack([K, np.zeros((3, 1))]).ravel().tolist()}}))
    out = tmp_path / "out"
    cmd = ["da3-ros", "media", "--video", f"front={EXAMPLES / 'robot_unitree.mp4'}", "--images", f"left={photos}",
           "--model", "random:da3-small@0", "--backend", "torch", "-p", "process_res:=252", "--out", str(out)]
    for c in Ks:
        cmd += ["--camera-info", f"{c}={tmp_path / f'{c}.yaml'}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[media] 2 sets, 4 views" in res.stdout  # the folder's 2 images end the run
    r = np.load(out / "set_000001.npz")
    assert list(r["camera_names"]) == ["front", "left"] and r["depth"].shape[0] == 2
    n, h, w = r["depth"].shape
    assert r["confidence"].shape == (n, h, w) and r["T_ref_cam"].shape == (2, 4, 4) and r["K_proc"].shape == (2, 3, 3)
    np.testing.assert_allclose(r["T_ref_cam"][0], np.eye(4), atol=1e-6)  # the reference camera is the origin
    # K: each camera's calibration mapped to the network size
    plans = preprocess.plan_batch([sizes["front"], sizes["left"]], 252)
    for i, c in enumerate(("front", "left")):
        np.testing.assert_allclose(r["K_proc"][i], preprocess.K_cam_to_proc(Ks[c], plans[i]), rtol=1e-9)
    for cam in ("front", "left"):
        png = cv2.imread(str(out / f"set_000001_{cam}.png"))
        assert png is not None and png.shape == (h, 3 * w, 3)  # image | depth | confidence
    # the fused cloud, read by plyfile: every valid pixel (stride 2) of both views, in the reference frame
    ply = PlyData.read(str(out / "set_000001_fused.ply"))
    v = ply["vertex"]
    assert ply.byte_order == "<" and [p.name for p in v.properties] == ["x", "y", "z", "red", "green", "blue"]
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1)
    views = []
    for i in range(n):
        pts, _ = geo.backproject(r["depth"][i], r["K_proc"][i], mask=geo.valid_mask(r["depth"][i]), stride=2)
        views.append(pts)
    expected, _ = geo.fuse_views(views, r["T_ref_cam"])
    assert len(xyz) == len(expected) > 1000
    np.testing.assert_allclose(xyz, expected, rtol=1e-5, atol=1e-5)
    rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1)
    assert rgb.std() > 10  # the images' colours, not a constant


def test_media_rejects_a_calibration_of_another_size(tmp_path):
    calib = tmp_path / "c.yaml"
    calib.write_text(yaml.safe_dump({"image_width": 640, "image_height": 480,
                                     "camera_matrix": {"data": pinhole_K(640, 480, 60.0).ravel().tolist()}}))
    res = subprocess.run(["da3-ros", "media", "--video", f"front={EXAMPLES / 'robot_unitree.mp4'}", "--camera-info",
                          f"front={calib}", "--model", "random:da3-small@0", "--backend", "torch", "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "640x480, its frames are 1024x576" in res.stderr
