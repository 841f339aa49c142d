"""Every registered variant builds on upstream's real architecture and predicts what the registry says."""
import gc

import numpy as np
import pytest

from da3_ros.engines import FrameBatch
from da3_ros.engines.torch_engine import TorchEngine
from da3_ros.models import VARIANTS, load_model
from da3_ros.models.registry import DepthKind


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_forward_matches_its_registry_entry(name, soh_images):
    model = load_model(f"random:{name}@1")
    v = model.variant
    n_params = sum(p.numel() for p in model.net.parameters()) / 1e6
    assert n_params == pytest.approx(v.params_m, rel=0.02), f"{name}: {n_params:.1f} M parameters"
    K = np.array([[1000.0, 0, 603.5], [0, 1000.0, 339.5], [0, 0, 1]])
    # a small network resolution keeps the giant variants affordable on a CPU
    pred = TorchEngine(model, process_res=140).infer(FrameBatch(soh_images[:1], K_cam=K[None]))
    assert pred.depth.shape == (1, 84, 140) and np.isfinite(pred.depth).all()
    assert (pred.T_cam_world is not None) == v.has_pose
    assert (pred.sky_mask is not None) == v.has_sky
    assert pred.is_metric == (v.depth_kind is not DepthKind.RELATIVE)
    assert pred.K_source == "camera"
    del model, pred
    gc.collect()
