"""The README's main command path: the demo runs the node on the example rig and leaves pictures."""
import shutil
import subprocess

import cv2
import numpy as np

from conftest import EXAMPLES, read_rgb
from da3_ros.core import preprocess
from da3_ros.offline.demo import render_cloud
from ros_harness import ros_env


def test_render_cloud_draws_points_in_colour():
    xs, ys = np.meshgrid(np.linspace(-1, 1, 50), np.linspace(-0.5, 0.5, 25))
    xyz = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 3.0)], axis=1).astype(np.float32)
    rgb = np.tile(np.array([[255, 0, 0]], np.uint8), (len(xyz), 1))
    img = render_cloud(xyz, rgb)
    drawn = img.sum(axis=2) > 0
    assert drawn.sum() > 500 and np.all(img[drawn][:, 2] == 255) and np.all(img[drawn][:, 0] == 0)  # BGR red
    assert render_cloud(xyz[:0], None).sum() == 0


def test_demo_end_to_end(tmp_path, domain_id):
    exe = shutil.which("da3-ros")
    assert exe
    out = subprocess.run([exe, "demo", "--examples", str(EXAMPLES), "--out", str(tmp_path), "--seconds", "3",
                          "--rate-hz", "5", "--domain-id", str(domain_id)],
                         env=ros_env(domain_id), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for key in ("views/s", "latency stamp->publish", "node peak memory", "stage forward p50"):
        assert key in out.stdout
    plans = preprocess.plan_batch([(680, 1208), (680, 1208), (576, 1024)], 504)
    h, w = plans[0].proc_hw
    for name in ("front", "left", "right"):
        png = cv2.imread(str(tmp_path / f"{name}_depth_confidence.png"))
        assert png is not None and png.shape == (h, 3 * w, 3)  # image | depth | confidence
    # the image tile is the camera's own frame as the network saw it (below the caption band)
    left = cv2.imread(str(tmp_path / "left_depth_confidence.png"))[40:, :w].astype(int)
    photo = preprocess.resize_image(read_rgb(EXAMPLES / "SOH_000.png"), plans[0])[40:, :, ::-1].astype(int)
    assert np.abs(left - photo).mean() < 1.0
    cloud = cv2.imread(str(tmp_path / "fused_cloud.png"))
    assert cloud is not None and (cloud[40:].sum(axis=2) > 0).sum() > 1000  # points below the caption band
