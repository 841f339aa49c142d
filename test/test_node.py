"""The node over real Fast DDS: node, player and checker in separate processes, real images, real network."""
import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from tf2_msgs.msg import TFMessage

from std_msgs.msg import Header
from conftest import EXAMPLES
from da3_ros.ros import conversions as conv
from da3_ros.core import preprocess
from da3_ros.msg import MultiViewDepth
from da3_ros.ros.player import pinhole_K
from ros_harness import diag_values, process, write_params

VIDEO, PHOTO = f"video:{EXAMPLES / 'robot_unitree.mp4'}", f"image:{EXAMPLES / 'SOH_000.png'}"
STEREO_PHOTOS = {"camera_names": ["left", "right"], "sources": [PHOTO, f"image:{EXAMPLES / 'SOH_010.png'}"],
                 "rate_hz": 2.0}


RES = 280  # the network size of these tests: what they assert holds at any size, and 504 costs 3x the forward


def _start(tmp_path, domain_id, node_params, player_params):
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth", {"model": "random:da3-small@0", "process_res": RES,
                                                                   **node_params})
    player_yaml = write_params(tmp_path / "player.yaml", "rig_player", player_params)
    return (process("depth_node", node_yaml, domain_id, tmp_path / "node.log"),
            process("rig_player", player_yaml, domain_id, tmp_path / "player.log"))


def _latest_diag(diags):
    return diag_values(diags[-1]) if diags else {}


def test_outputs_are_consistent(tmp_path, domain_id, checker):
    """Encodings, headers, K vs size, cloud = back-projection, TF = poses in the result message; YAML honoured."""
    node_params = {"camera_names": ["front", "left"], "cloud.stride": 3, "tf.suffix": "_est", "depth.publish_mm": True,
                   "cameras": {"front": {"image_topic": "/rig/front_cam/image"}}}
    player = {"camera_names": ["front", "left"], "sources": [VIDEO, PHOTO], "rate_hz": 4.0}
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    depth = checker.collect(Image, "front/depth/image")
    depth_mm = checker.collect(Image, "front/depth/image_mm")
    info = checker.collect(CameraInfo, "front/depth/camera_info")
    points = checker.collect(PointCloud2, "front/points")
    fused = checker.collect(PointCloud2, "points_fused")
    tf = checker.collect(TFMessage, "/tf", 100)
    node_cm, player_cm = _start(tmp_path, domain_id, node_params, player)
    with node_cm, player_cm:
        # the player publishes front on front/image_raw; the node listens on /rig/front_cam/image: relay it
        relay = checker.node.create_publisher(Image, "/rig/front_cam/image", 5)
        checker.node.create_subscription(Image, "front/image_raw", relay.publish, qos_profile_sensor_data)
        checker.spin_until(lambda: len(mv) >= 2 and len(points) >= 2 and len(fused) >= 2, 90, "two sets")
        checker.spin_for(1.0)  # TF and clouds of the last set may still be in flight
    m = mv[-2]
    assert [v.camera_name for v in m.views] == ["front", "left"] and m.reference_camera == "front"
    assert not m.is_metric and m.header.frame_id == "front_optical_frame" and "UNTRAINED" in m.model
    stamp = conv.stamp_to_ns(m.header.stamp)
    d = next(x for x in depth if conv.stamp_to_ns(x.header.stamp) == stamp)
    ci = next(x for x in info if conv.stamp_to_ns(x.header.stamp) == stamp)
    pc = next(x for x in points if conv.stamp_to_ns(x.header.stamp) == stamp)
    assert d.encoding == "32FC1" and d.header.frame_id == "front_optical_frame" == ci.header.frame_id
    assert (ci.height, ci.width) == (d.height, d.width)
    mm = next(x for x in depth_mm if conv.stamp_to_ns(x.header.stamp) == stamp)
    assert mm.encoding == "16UC1" and mm.header.frame_id == d.header.frame_id
    expected_mm = np.rint(conv.image_to_array(d).astype(np.float64) * 1000).astype(np.uint16)
    np.testing.assert_array_equal(conv.image_to_array(mm), expected_mm)
    # K is the player's camera_info mapped to the network resolution (video 1024x576 + photo 1208x680)
    plans = preprocess.plan_batch([(576, 1024), (680, 1208)], RES)
    K_expected = preprocess.K_cam_to_proc(pinhole_K(1024, 576, 60.0), plans[0])
    np.testing.assert_allclose(np.array(ci.k).reshape(3, 3), K_expected, rtol=1e-9)
    assert (d.height, d.width) == plans[0].proc_hw
    # every cloud point is the back-projection of its depth pixel (independent check: project it back)
    depth_img = conv.image_to_array(d)
    xyz, rgb = conv.pointcloud2_to_xyz_rgb(pc)
    assert len(xyz) > 100 and rgb is not None
    K = np.array(ci.k).reshape(3, 3)
    u = K[0, 0] * xyz[:, 0] / xyz[:, 2] + K[0, 2]
    v = K[1, 1] * xyz[:, 1] / xyz[:, 2] + K[1, 2]
    ui, vi = np.round(u).astype(int), np.round(v).astype(int)
    assert np.abs(u - ui).max() < 1e-2 and np.abs(v - vi).max() < 1e-2
    assert np.all(ui % 3 == 0) and np.all(vi % 3 == 0)  # cloud.stride from the YAML
    np.testing.assert_allclose(xyz[:, 2], depth_img[vi, ui], rtol=1e-6)
    # TF: the estimated frames hang under the reference camera's frame and equal the message's poses
    tfs = {t.child_frame_id: t for msg in tf for t in msg.transforms if conv.stamp_to_ns(t.header.stamp) == stamp}
    assert set(tfs) == {"front_optical_frame_est", "left_optical_frame_est"}
    for view in m.views:
        t = tfs[f"{view.camera_name}_optical_frame_est"]
        assert t.header.frame_id == "front_optical_frame"
        np.testing.assert_allclose(conv.transform_to_T(t.transform), conv.pose_to_T(view.pose), atol=1e-6)
    np.testing.assert_allclose(conv.pose_to_T(m.views[0].pose), np.eye(4), atol=1e-6)
    # the fused cloud holds both views, the reference view unchanged
    fz = next(x for x in fused if conv.stamp_to_ns(x.header.stamp) == stamp)
    fxyz, _ = conv.pointcloud2_to_xyz_rgb(fz)
    assert fz.header.frame_id == "front_optical_frame" and len(fxyz) > len(xyz)
    np.testing.assert_allclose(fxyz[:len(xyz)], xyz, atol=1e-5)


def test_newest_sets_when_inputs_outrun_the_engine(tmp_path, domain_id, checker):
    """15 Hz in, ~1 Hz engine: newest sets only, stamps increase, drops counted, latency stays bounded.

    process_res 504: the slow engine is the point.
    """
    player = {"camera_names": ["front", "left"], "sources": [VIDEO, PHOTO], "rate_hz": 15.0, "jitter_s": 0.003}
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    latency_s = []
    def on_set(m):
        now_ns = checker.node.get_clock().now().nanoseconds
        latency_s.append((now_ns - conv.stamp_to_ns(m.header.stamp)) / 1e9)

    checker.node.create_subscription(MultiViewDepth, "multiview_depth", on_set, 10)
    node_cm, player_cm = _start(tmp_path, domain_id, {"camera_names": ["front", "left"], "process_res": 504}, player)
    with node_cm, player_cm:
        checker.spin_until(lambda: len(mv) >= 2, 90, "first sets")
        first = _latest_diag(diags)
        checker.spin_until(lambda: len(mv) >= 8, 90, "eight sets")
        checker.spin_for(1.5)
        last = _latest_diag(diags)
    stamps = [conv.stamp_to_ns(m.header.stamp) for m in mv]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert last["sets_superseded"] > first.get("sets_superseded", 0) > 0
    assert last["frames_in.front"] > 4 * last["sets_done"]
    # bounded latency, relative to this run's forward (a loaded machine is slower in every stage alike): no
    # backlog builds up; the newest-set policy needs at most two forwards (one in flight, then its own)
    forward_s = last["forward_ms.max"] / 1e3
    assert max(latency_s[-3:]) < max(latency_s[:3]) + 2 * forward_s
    assert max(latency_s) < 3 * forward_s + 1.0


def test_outputs_without_subscribers_cost_nothing(tmp_path, domain_id, checker):
    """No output subscribed: no forward, even with a /tf listener (as RViz or Nav2 always are; issue 23.15).

    A depth subscriber makes it run, and the TF of those sets goes out to the /tf listener. A compressedDepth
    subscriber receives image_transport's compressedDepth of the same depth (decoded independently).
    """
    from test_compressed_depth import decode_compressed_depth
    from da3_ros.ros.conversions.compressed_depth import DEPTH_MAX_M, MIN_DEPTH_M, quantisation_error_m

    player = {"camera_names": ["front"], "sources": [VIDEO], "rate_hz": 5.0}
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    tf = checker.collect(TFMessage, "/tf", 100)  # a /tf listener from the start
    node_cm, player_cm = _start(tmp_path, domain_id, {"camera_names": ["front"]}, player)
    with node_cm, player_cm:
        checker.spin_until(lambda: _latest_diag(diags).get("skipped_no_subscribers", 0) >= 3, 60, "skipped sets")
        idle = _latest_diag(diags)
        assert idle["sets_done"] == 0 and idle["clouds_built"] == 0 and not tf
        depth = checker.collect(Image, "front/depth/image")
        packed = checker.collect(CompressedImage, "front/depth/image/compressedDepth")
        checker.spin_until(lambda: len(depth) >= 2 and len(packed) >= 2 and tf, 60, "depth, compressedDepth, TF")
        checker.spin_for(1.2)
        busy = _latest_diag(diags)
    assert busy["sets_done"] >= 2 and busy["clouds_built"] == 0  # depth only: no cloud was computed
    assert {t.child_frame_id for m in tf for t in m.transforms} == {"front_optical_frame_da3"}
    by_stamp = {conv.stamp_to_ns(m.header.stamp): conv.image_to_array(m) for m in depth}
    pair = next(m for m in packed if conv.stamp_to_ns(m.header.stamp) in by_stamp)
    encoding, decoded = decode_compressed_depth(pair)
    d = by_stamp[conv.stamp_to_ns(pair.header.stamp)].astype(np.float64)
    sent = (d >= MIN_DEPTH_M) & (d < DEPTH_MAX_M)  # nearer is clipped, farther / NaN / sky decode to NaN
    assert encoding == "32FC1" and pair.header.frame_id == depth[0].header.frame_id and sent.any()
    assert (np.abs(decoded[sent] - d[sent]) <= np.vectorize(quantisation_error_m)(d[sent]) * 1.001 + 1e-6).all()


@pytest.mark.parametrize("alone", [False, True])
def test_a_tf_listener_alone_runs_forwards_only_with_tf_publish_alone(alone):
    """The worker's decision (OutputConfig.forward_wanted): /tf alone runs nothing unless tf.publish_alone.

    Old rule: any /tf listener ran every forward (a robot always has one).
    """
    from da3_ros.core.config import OutputConfig

    out = OutputConfig(tf_publish_alone=alone)
    assert out.forward_wanted(outputs_listened=True, tf_listened=False, tf_applies=False)
    assert out.forward_wanted(outputs_listened=True, tf_listened=True, tf_applies=True)
    assert out.forward_wanted(outputs_listened=False, tf_listened=True, tf_applies=True) is alone
    # a set that publishes no TF (tf.mode off, a model without poses) is never run for /tf
    assert not out.forward_wanted(outputs_listened=False, tf_listened=True, tf_applies=False)
    assert not out.forward_wanted(outputs_listened=False, tf_listened=False, tf_applies=True)


def test_pose_conditioning_with_two_cameras(tmp_path, domain_id, checker):
    """Known extrinsics (parameters) go into the model for N=2 and come out as the published poses."""
    node_params = {"camera_names": ["left", "right"], "sync.mode": "exact", "backend": "torch",
                   "cameras": {"left": {"T_ref_cam": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]},
                               "right": {"T_ref_cam": [0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]}}}
    player = STEREO_PHOTOS
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    node_cm, player_cm = _start(tmp_path, domain_id, node_params, player)
    with node_cm, player_cm:
        checker.spin_until(lambda: len(mv) >= 1, 90, "a conditioned set")
    m = mv[0]
    np.testing.assert_allclose(conv.pose_to_T(m.views[1].pose)[:3, 3], [0.12, 0, 0], atol=1e-9)
    assert all(v.has_pose for v in m.views)
    assert m.views[0].depth_scale == m.views[1].depth_scale != 1.0  # depth brought to the given units
    assert m.is_metric and m.scale_source == "rig" and m.scale == pytest.approx(m.views[0].depth_scale)  # metres


def test_bad_input_is_counted_and_the_node_survives(tmp_path, domain_id, checker):
    """A wrong encoding is a logged, counted drop; the next good image is processed."""
    node_yaml = write_params(tmp_path / "node.yaml", "da3_depth",
                             {"model": "random:da3-small@0", "camera_names": ["cam"], "process_res": RES})
    depth = checker.collect(Image, "cam/depth/image")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    pub = checker.node.create_publisher(Image, "cam/image_raw", 5)
    rgb = np.zeros((120, 160, 3), np.uint8)
    with process("depth_node", node_yaml, domain_id, tmp_path / "node.log"):
        checker.spin_until(lambda: pub.get_subscription_count() > 0, 60, "node subscribed")

        def image(encoding):
            stamp = conv.ns_to_stamp(checker.node.get_clock().now().nanoseconds)
            msg = conv.rgb_to_image(rgb, Header(stamp=stamp, frame_id="cam"))
            msg.encoding = encoding
            return msg

        checker.publish_until(pub, lambda: image("bayer_rggb8"), lambda: _latest_diag(diags).get("bad_input", 0) >= 1,
                              30, "bad input counted")
        assert not depth  # nothing was published for the bad images
        checker.publish_until(pub, lambda: image("rgb8"), lambda: len(depth) >= 1, 30, "depth of a good image")
    assert (depth[0].height, depth[0].width) == preprocess.plan_resize((120, 160), RES).proc_hw


@pytest.mark.parametrize("input_qos", ["reliable"])
def test_incompatible_qos_is_reported(tmp_path, domain_id, checker, input_qos):
    """A best-effort camera and a reliable subscription never match: the node says so in /diagnostics."""
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    player = {"camera_names": ["front"], "sources": [VIDEO], "rate_hz": 5.0, "qos": "sensor_data"}
    node_cm, player_cm = _start(tmp_path, domain_id, {"camera_names": ["front"], "qos.input": input_qos}, player)
    with node_cm, player_cm:
        checker.spin_until(lambda: _latest_diag(diags).get("incompatible_qos", 0) >= 1, 60, "incompatible QoS")
        assert diags[-1].status[0].level == diags[-1].status[0].WARN
    assert "incompatible QoS" in (tmp_path / "node.log").read_text()


def test_pose_conditioning_from_tf_static(tmp_path, domain_id, checker):
    """Rig extrinsics published on /tf_static (latched) condition the model, through a parent frame."""
    from geometry_msgs.msg import TransformStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = checker.node.create_publisher(TFMessage, "/tf_static", latched)
    T_rig_left, T_rig_right = np.eye(4), np.eye(4)
    T_rig_left[:3, 3], T_rig_right[:3, 3] = [0.0, -0.1, 0.0], [0.25, -0.1, 0.0]
    edges = [conv.transform_stamped(T_rig_left, "rig", "left_optical_frame", 0),
             conv.transform_stamped(T_rig_right, "rig", "right_optical_frame", 0)]
    assert all(isinstance(e, TransformStamped) for e in edges)
    pub.publish(conv.tf_message(edges))
    node_params = {"camera_names": ["left", "right"], "sync.mode": "exact", "pose_conditioning": "tf_static",
                   "tf.mode": "camera_frames"}
    tf = checker.collect(TFMessage, "/tf", 100)
    player = STEREO_PHOTOS
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    node_cm, player_cm = _start(tmp_path, domain_id, node_params, player)
    with node_cm, player_cm:
        checker.spin_until(lambda: len(mv) >= 1, 90, "a set conditioned from /tf_static")
        checker.spin_for(0.5)
    np.testing.assert_allclose(conv.pose_to_T(mv[0].views[1].pose)[:3, 3], [0.25, 0, 0], atol=1e-9)
    # tf.mode camera_frames (a rig with no other TF source): the cameras' own frames under the reference
    published = [(t.header.frame_id, t.child_frame_id) for msg in tf for t in msg.transforms]
    assert published and set(published) == {("left_optical_frame", "right_optical_frame")}
    assert mv[0].views[1].depth_scale != 1.0


def test_metric_model_publishes_metres_and_sky(tmp_path, domain_id, checker):
    """da3metric-large: depth in metres from camera_info's focal length, a sky mask, no poses, no TF."""
    node_params = {"model": "random:da3metric-large@0", "camera_names": ["front"], "process_res": 140,
                   "depth.publish_mm": True, "backend": "torch"}
    player = {"camera_names": ["front"], "sources": [PHOTO], "rate_hz": 2.0}
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    sky = checker.collect(Image, "front/sky/mask")
    tf = checker.collect(TFMessage, "/tf", 100)
    node_cm, player_cm = _start(tmp_path, domain_id, node_params, player)
    with node_cm, player_cm:
        checker.spin_until(lambda: len(mv) >= 1 and len(sky) >= 1, 120, "a metric set and a sky mask")
    m, view = mv[0], mv[0].views[0]
    assert m.is_metric and not view.has_pose and not tf
    K = np.array(view.camera_info.k).reshape(3, 3)
    assert view.depth_scale == pytest.approx((K[0, 0] + K[1, 1]) / 2 / 300, rel=1e-6)  # focal / 300
    mask = conv.image_to_array(sky[0])
    assert sky[0].encoding == "mono8" and mask.shape == (view.depth.height, view.depth.width)
    assert set(np.unique(mask)) <= {0, 255}
    depth = conv.image_to_array(view.depth)
    assert np.all(np.isinf(depth[mask == 255])) and np.all(np.isfinite(depth[mask == 0]))  # REP 118: sky = +Inf


def test_onnxruntime_backend_publishes_without_torch(tmp_path, domain_id, checker):
    """Backend onnxruntime: the graph is exported into the cache (another process) and the node never loads torch."""
    node_params = {"camera_names": ["left", "right"], "backend": "onnxruntime", "process_res": 140,
                   "engine_cache_dir": str(tmp_path / "cache")}
    mv = checker.collect(MultiViewDepth, "multiview_depth")
    diags = checker.collect(DiagnosticArray, "/diagnostics")
    node_cm, player_cm = _start(tmp_path, domain_id, node_params, STEREO_PHOTOS)
    with node_cm, player_cm:
        checker.spin_until(lambda: len(mv) >= 2 and _latest_diag(diags).get("sets_done", 0) >= 2, 120, "two sets")
    values = {kv.key: kv.value for kv in diags[-1].status[0].values}
    assert values["backend"] == "onnxruntime" and values["torch_loaded"] == "0"
    assert [v.camera_name for v in mv[-1].views] == ["left", "right"] and all(v.has_pose for v in mv[-1].views)
    depth = conv.image_to_array(mv[-1].views[0].depth)
    assert depth.shape == (84, 140) and np.isfinite(depth).all()  # process_res 140 of a 1208x680 camera
    assert list((tmp_path / "cache").glob("onnx-*.onnx"))  # exported once, verified by its sidecar
