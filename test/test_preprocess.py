"""Preprocessing equals upstream's InputProcessor bit for bit; the intrinsics mapping is exact."""
import numpy as np
import pytest

from da3_ros.core import preprocess

SIZES = [(680, 1208), (1208, 680), (480, 640), (336, 504), (100, 90), (720, 1280)]


@pytest.fixture(scope="module")
def upstream_processor():
    from depth_anything_3.utils.io.input_processor import InputProcessor

    return InputProcessor()


def _image(hw, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)


@pytest.mark.parametrize("method", preprocess.METHODS)
@pytest.mark.parametrize("hw", SIZES)
def test_pixels_equal_upstream(upstream_processor, hw, method):
    img = _image(hw, hash((hw, method)) % 2**32)
    ours, plans, _ = preprocess.preprocess_batch([img], 504, method)
    theirs, _, _ = upstream_processor([img], process_res=504, process_res_method=method, num_workers=1)
    assert ours.shape == theirs.shape[-4:] and plans[0].proc_hw == tuple(theirs.shape[-2:])
    assert np.array_equal(ours, theirs.reshape(ours.shape).numpy())  # bit for bit, numpy vs torch


def test_real_photos_equal_upstream(upstream_processor, soh_images):
    ours, plans, _ = preprocess.preprocess_batch(soh_images, 504)
    theirs, _, _ = upstream_processor(soh_images, process_res=504, num_workers=1)
    assert plans[0].proc_hw == (280, 504)
    assert np.array_equal(ours, theirs.reshape(ours.shape).numpy())  # bit for bit, numpy vs torch


@pytest.mark.parametrize("method", ["upper_bound_resize", "lower_bound_crop"])
def test_mixed_sizes_crop_like_upstream(upstream_processor, method):
    imgs = [_image((680, 1208), 1), _image((480, 640), 2)]
    ours, plans, _ = preprocess.preprocess_batch(imgs, 504, method)
    theirs, _, _ = upstream_processor(imgs, process_res=504, process_res_method=method, num_workers=1)
    assert np.array_equal(ours, theirs.reshape(ours.shape).numpy())  # bit for bit, numpy vs torch
    assert plans[0].proc_hw == plans[1].proc_hw


@pytest.mark.parametrize("method", preprocess.METHODS)
@pytest.mark.parametrize("hw", SIZES)
def test_intrinsics_round_trip(hw, method):
    K = np.array([[912.5, 0.3, hw[1] / 2 + 3.7], [0.0, 905.25, hw[0] / 2 - 2.1], [0.0, 0.0, 1.0]])
    plan = preprocess.plan_resize(hw, 504, method)
    K_proc = preprocess.K_cam_to_proc(K, plan)
    assert np.allclose(K_proc, K) == np.allclose(plan.A_proc_cam, np.eye(3))
    np.testing.assert_allclose(preprocess.K_proc_to_cam(K_proc, plan), K, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", preprocess.METHODS)
def test_intrinsics_follow_the_pixels(method):
    """A blob at camera pixel (u, v) lands where A_proc_cam says, to a small fraction of a pixel."""
    hw, (u, v) = (680, 1208), (700.3, 250.8)
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]]
    blob = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 12.0 ** 2))
    img = np.repeat((blob * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)
    plan = preprocess.plan_resize(hw, 504, method)
    out = preprocess.resize_image(img, plan)[:, :, 0].astype(np.float64)
    oy, ox = np.mgrid[0:out.shape[0], 0:out.shape[1]]
    centroid = np.array([(ox * out).sum(), (oy * out).sum()]) / out.sum()
    expected = (plan.A_proc_cam @ np.array([u, v, 1.0]))[:2]
    assert np.abs(centroid - expected).max() < 0.05, (centroid, expected)
    # upstream's ratio-only scaling of cx, cy misses the blob by ~(ratio - 1) / 2 px
    sx, sy = plan.A_proc_cam[0, 0], plan.A_proc_cam[1, 1]
    ratio_only = expected - np.array([0.5 * sx - 0.5, 0.5 * sy - 0.5])
    assert np.abs(centroid - ratio_only).min() > 0.1


def test_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        preprocess.preprocess_batch([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(ValueError, match="process_res_method"):
        preprocess.plan_resize((10, 10), 504, "stretch")


def test_mixed_sizes_crop_loses_field_of_view_and_stretch_keeps_it():
    """640x480 beside 1208x680: upstream's crop keeps 74 % of the small camera's height; stretch keeps it all."""
    from da3_ros.core.preprocess import field_of_view_kept, plan_batch, resize_image

    hws = [(680, 1208), (480, 640)]
    crop = plan_batch(hws, 504)
    stretch = plan_batch(hws, 504, mixed="stretch")
    assert crop[1].proc_hw == stretch[1].proc_hw == crop[0].proc_hw == (280, 504)  # same cost
    assert field_of_view_kept(crop[1]) == pytest.approx((280 / 378, 1.0))
    assert field_of_view_kept(stretch[1]) == (1.0, 1.0)
    np.testing.assert_array_equal(stretch[0].A_proc_cam, crop[0].A_proc_cam)  # the largest view: unchanged
    # the whole camera image maps onto the whole network image: corners to corners (pixel-centre convention)
    A = stretch[1].A_proc_cam
    for (u, v), (x, y) in [((-0.5, -0.5), (-0.5, -0.5)), ((639.5, 479.5), (503.5, 279.5))]:
        np.testing.assert_allclose((A @ [u, v, 1.0])[:2], [x, y], atol=1e-9)
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert resize_image(rgb, stretch[1]).shape == (280, 504, 3)
    with pytest.raises(ValueError, match="mixed_resolution must be one of"):
        plan_batch(hws, 504, mixed="pad")
    with pytest.raises(ValueError, match="works with the \\*_resize methods"):
        plan_batch([(680, 1208), (480, 650)], 504, "upper_bound_crop", mixed="stretch")
