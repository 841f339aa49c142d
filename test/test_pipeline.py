"""The per-set core (da3_ros.ros.pipeline) without DDS: bad camera_info, a camera_info that never comes, NaN depth."""
import numpy as np
import pytest
from std_msgs.msg import Header
from sensor_msgs.msg import CameraInfo

from da3_ros.ros import conversions as conv
from da3_ros.engines import create_engine
from da3_ros.core.geometry import pinhole_K
from da3_ros.core.config import OutputConfig
from da3_ros.core.results import SetResult
from da3_ros.core.config import CoreConfig
from da3_ros.core.processor import CAMERA_INFO_WAIT_S, DropReason, Dropped, Processed
from da3_ros.ros.messages import SetMessages
from da3_ros.ros.pipeline import SetProcessor
from da3_ros.core.prediction import Prediction
from da3_ros.core.rig import Rig, RigResult
from da3_ros.core.static_tf import StaticTfBuffer


@pytest.fixture(scope="module")
def engine():
    return create_engine("torch", "random:da3-small@0", process_res=140)


def _core(engine, notes: list, cameras=("left",), hfov=()) -> SetProcessor:
    cfg = CoreConfig(list(cameras), [""] * len(cameras), "auto", OutputConfig(), None, list(hfov))
    return SetProcessor(Rig(engine), cfg, StaticTfBuffer(), warn=notes.append)


def _image(rgb, t_s: float, frame="left_optical_frame"):
    return conv.rgb_to_image(rgb, Header(stamp=conv.ns_to_stamp(int(t_s * 1e9)), frame_id=frame))


def test_bad_K_in_camera_info_is_said_once_and_not_used(engine, soh_images):
    notes: list = []
    core = _core(engine, notes)
    rgb = soh_images[0]
    for bad in ([0.0] * 9, [float("nan")] + [0.0] * 8):
        info = CameraInfo(height=rgb.shape[0], width=rgb.shape[1], k=bad)
        for t in (0.0, 0.5):
            done = core.process([_image(rgb, t)], [info], [False])
            assert isinstance(done, Processed) and done.outputs.pred.K_source == "model"
    assert len(notes) == 2 and "all-zero K" in notes[0] and "invalid K" in notes[1]


def test_an_advertised_camera_info_that_never_comes_is_waited_for_then_not(engine, soh_images):
    notes: list = []
    core = _core(engine, notes)
    waits = [core.process([_image(soh_images[0], t)], [None], [True]) for t in (0.0, 1.0, CAMERA_INFO_WAIT_S - 0.1)]
    assert all(isinstance(d, Dropped) and d.reason is DropReason.WAITING_FOR_CAMERA_INFO for d in waits)
    done = core.process([_image(soh_images[0], CAMERA_INFO_WAIT_S + 0.1)], [None], [True])
    assert isinstance(done, Processed) and "none arrived" in notes[-1]


def test_hfov_deg_stands_in_for_camera_info_and_is_validated(engine, soh_images):
    notes: list = []
    h, w = soh_images[0].shape[:2]
    done = _core(engine, notes, hfov=[70.0]).process([_image(soh_images[0], 0.0)], [None], [False])
    assert done.outputs.pred.K_source == "camera"
    np.testing.assert_allclose(SetMessages(done.outputs).camera_info(0).k[0], done.outputs.pred.K_proc[0, 0, 0])
    assert pinhole_K(w, h, 70.0)[0, 0] == pytest.approx(0.5 * w / np.tan(np.radians(35.0)))
    with pytest.raises(ValueError, match=r"cameras.left.hfov_deg must be in \(0, 180\)"):
        _core(engine, notes, hfov=[200.0])


def test_invalid_depth_is_published_as_nan_never_as_a_distance():
    """NaN, Inf, zero or negative depth from a model: NaN in the image, no point in any cloud."""
    depth = np.array([[[1.0, np.nan, np.inf], [0.0, -2.0, 3.0]]], np.float32)
    K = np.array([[[2.0, 0, 1], [0, 2.0, 0.5], [0, 0, 1]]])
    pred = Prediction(depth=depth, is_metric=True, K_proc=K, K_source="camera")
    out = SetResult(RigResult(pred, 0, None, False), ["cam"], ["cam_optical_frame"], [0],
                    OutputConfig(stride=1, drop_sky=False))
    published = out.depth_arrays[0]
    assert np.isnan(published[[0, 0, 1, 1], [1, 2, 0, 1]]).all() and published[0, 0] == 1.0
    pts, _, _ = out.cloud_arrays(0)
    assert len(pts) == 2 and np.isfinite(pts).all() and sorted(pts[:, 2]) == [1.0, 3.0]


def test_cameras_of_different_sizes_are_told_what_they_keep(engine, soh_images):
    notes: list = []
    small = np.ascontiguousarray(soh_images[1][100:580, 284:924])  # a 640x480 camera
    core = _core(engine, notes, cameras=("left", "small"))
    for t in (0.0, 0.5):
        done = core.process([_image(soh_images[0], t), _image(small, t, "small_optical_frame")],
                            [None, None], [False, False])
        assert isinstance(done, Processed)
    said = [n for n in notes if "different sizes" in n]
    assert len(said) == 1 and "small 640x480 -> 140x84 keeping 75 % of its height" in said[0]  # process_res 140
    assert "stretch keeps every camera's whole view" in said[0]
