"""The torch engine computes exactly what upstream computes, on the same weights and the real photos."""
import numpy as np
import pytest
import torch

from da3_ros.engines import FrameBatch
from da3_ros.engines.torch_engine import TorchEngine
from da3_ros.models import load_model
from da3_ros.models.loading import build_network

TOL = 1e-5  # max abs difference, fp32


def _upstream_api(variant_name, state_dict):
    """Upstream's DepthAnything3 API, its forward minus the CPU fp16 autocast (all else is upstream's)."""
    from depth_anything_3.api import DepthAnything3

    class DepthAnything3FP32(DepthAnything3):
        @torch.inference_mode()
        def forward(self, image, extrinsics=None, intrinsics=None, export_feat_layers=None, infer_gs=False,
                    use_ray_pose=False, ref_view_strategy="saddle_balanced"):
            return self.model(image, extrinsics, intrinsics, export_feat_layers or [], infer_gs, use_ray_pose,
                              ref_view_strategy)

    api = DepthAnything3FP32(model_name=variant_name)
    api.model.load_state_dict(state_dict)
    return api.eval()


def _max_diff(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape and a.size > 0, (a.shape, b.shape)
    return float(np.abs(a - b).max())


@pytest.fixture(scope="module", params=["da3-small", "da3-base"])
def model(request):
    return load_model(f"random:{request.param}@3")


@pytest.mark.parametrize("n_views", [1, 2])
def test_equals_upstream_raw_forward(model, soh_images, n_views):
    from depth_anything_3.utils.io.input_processor import InputProcessor

    images = soh_images[:n_views]
    ours = TorchEngine(model).infer(FrameBatch(images))
    x, _, _ = InputProcessor()(images, process_res=504, num_workers=1)
    ref_net = build_network(model.variant, seed=1234)
    ref_net.load_state_dict(model.net.state_dict())
    with torch.inference_mode():
        ref = ref_net(x[None], None, None, [], False, False, "saddle_balanced")
    ref = {k: v[0].numpy() for k, v in ref.items() if isinstance(v, torch.Tensor)}
    assert _max_diff(ours.depth, ref["depth"]) <= TOL
    assert _max_diff(ours.confidence, ref["depth_conf"]) <= TOL
    assert _max_diff(ours.T_cam_world[:, :3, :], ref["extrinsics"]) <= TOL
    assert _max_diff(ours.K_proc, ref["intrinsics"]) <= TOL * max(1.0, np.abs(ref["intrinsics"]).max())
    assert ours.K_source == "model" and not ours.is_metric and ours.hw == (280, 504)


@pytest.mark.parametrize("n_views", [1, 2])
def test_equals_upstream_inference_api(model, soh_images, n_views):
    images = soh_images[:n_views]
    ours = TorchEngine(model).infer(FrameBatch(images))
    ref = _upstream_api(model.variant.name, model.net.state_dict()).inference(images, process_res=504)
    assert _max_diff(ours.depth, ref.depth) <= TOL
    assert _max_diff(ours.confidence, ref.conf) <= TOL
    assert _max_diff(ours.T_cam_world[:, :3, :], ref.extrinsics[:, :3, :]) <= TOL
    assert _max_diff(ours.K_proc, ref.intrinsics) <= TOL * max(1.0, np.abs(ref.intrinsics).max())


def test_metric_depth_is_upstream_scaled_by_focal(soh_images):
    """DA3METRIC: metres = raw * focal_px(network res) / 300 (upstream's apply_metric_scaling)."""
    from depth_anything_3.utils.alignment import apply_metric_scaling

    model = load_model("random:da3metric-large@2")
    K = np.array([[1000.0, 0, 603.5], [0, 1000.0, 339.5], [0, 0, 1]])
    torch.manual_seed(0)  # the sky fill samples a quantile at random
    ours = TorchEngine(model).infer(FrameBatch(soh_images[:1], K_cam=K[None]))
    torch.manual_seed(0)
    raw = TorchEngine(model).infer(FrameBatch(soh_images[:1]))
    assert ours.is_metric and not raw.is_metric and ours.sky_mask is not None
    K_proc = torch.from_numpy(ours.K_proc[None]).float()
    ref = apply_metric_scaling(torch.from_numpy(raw.depth[None]), K_proc)[0].numpy()
    assert _max_diff(ours.depth, ref) <= TOL * max(1.0, np.abs(ref).max())
    assert ours.depth_scale[0] == pytest.approx((ours.K_proc[0, 0, 0] + ours.K_proc[0, 1, 1]) / 600, rel=1e-9)
