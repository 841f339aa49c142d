"""The README's main command path: the demo runs the node on the example rig and leaves pictures."""
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

from conftest import EXAMPLES, read_rgb
from da3_ros.core import preprocess
from da3_ros.offline import demo
from da3_ros.offline.demo import render_cloud
from da3_ros.ros import conversions as conv
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


def test_the_recording_goes_on_until_a_set_it_can_picture(domain_id, checker):
    """Regression: recording ends only once some set's camera frames all arrived.

    On a loaded machine the recorder had missed every set's camera frames (best effort), so the picture came
    without the camera image (the CI run on 634c920 with two workers). A stand-in camera and node
    (the checker) publish ten sets whose frames are lost, then sets with their frames; recording 0.3 s after the
    first set must go on until a set it can picture.
    """
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from da3_ros.msg import DepthView, MultiViewDepth

    sets = checker.node.create_publisher(MultiViewDepth, "multiview_depth", 5)
    images = checker.node.create_publisher(Image, "left/image_raw", qos_profile_sensor_data)
    stop = threading.Event()

    def node_and_camera() -> None:
        for k in range(1, 600):
            header = Header(stamp=conv.ns_to_stamp(k * 10**8), frame_id="left_optical_frame")
            if k > 10:  # the first ten sets' frames are lost
                images.publish(conv.rgb_to_image(np.zeros((4, 6, 3), np.uint8), header))
            sets.publish(MultiViewDepth(header=header, views=[DepthView(camera_name="left", depth=Image(
                header=header))]))
            if stop.wait(0.1):  # a 10 Hz rig
                return

    player = threading.Thread(target=node_and_camera)
    rclpy.init(domain_id=domain_id)  # the recorder's own context, shut down whatever happens below
    rec = stand_in = None
    try:
        rec = demo._Recorder(["left"])
        stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # record() watches it
        checker.spin_until(lambda: sets.get_subscription_count() and images.get_subscription_count(), 30,
                           "the recorder's subscriptions")
        player.start()
        rec.record(0.3, [stand_in], Path("."))
        pictured = [m for m in rec.sets if None not in demo._set_frames(m, rec.camera_frames)]
        assert pictured, [conv.stamp_to_ns(m.header.stamp) for m in rec.sets]
        assert demo._picture_set(rec.sets, rec.camera_frames).header.stamp.sec >= 1  # stamp k = 10+ (1 s)
    finally:
        stop.set()
        if player.is_alive():
            player.join()
        if stand_in is not None:
            stand_in.kill()
            stand_in.wait()
        if rec is not None:
            rec.node.destroy_node()
        rclpy.try_shutdown()
