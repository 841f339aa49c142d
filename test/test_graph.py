"""InferenceGraph equals upstream's network; each export-friendly replacement equals the function it replaces."""
import numpy as np
import pytest
import torch

from da3_ros.export import export_patches
from da3_ros.engines.graph import InferenceGraph, rigid_inverse
from da3_ros.models.loading import build_network

RENAME = {"extrinsics_out": "extrinsics", "intrinsics_out": "intrinsics"}


def _upstream(net, x, **kw):
    with torch.inference_mode():
        out = net(x, kw.pop("ext", None), kw.pop("intr", None), [], False, kw.pop("use_ray_pose", False), "first")
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def _ours(net, x, **kw):
    g = InferenceGraph(net, use_ray_pose=kw.pop("use_ray_pose", False)).eval()
    with torch.inference_mode():
        return dict(zip(g.names, g(x, kw.pop("ext", None), kw.pop("intr", None))))


@pytest.mark.parametrize("name,hw,n", [("da3-small", (280, 504), 1), ("da3-small", (280, 504), 3),
                                       ("da3metric-large", (112, 196), 2), ("da3mono-large", (112, 196), 1)])
def test_graph_equals_upstream_forward(name, hw, n):
    """Same layers, same order: identical outputs (the aux branch and the sky fill only are left out).

    Any-view models match bit for bit; the DPT head (mono/metric) to 1 float32 ulp at N > 1, where the
    convolution library picks another kernel for the batch.
    """
    net = build_network(name, seed=4)
    x = torch.randn(1, n, 3, *hw, generator=torch.Generator().manual_seed(0))
    ours, ref = _ours(net, x), _upstream(net, x)
    if "sky" in ours:  # upstream fills sky with a (sampled) quantile inside its forward; compare non-sky
        keep = ref["sky"] < 0.3
        assert torch.equal(ours["sky"], ref["sky"]) and keep.any()
        assert torch.allclose(ours["depth"][keep], ref["depth"][keep], rtol=2e-7, atol=0)
    else:
        assert set(ours) == {"depth", "depth_conf", "extrinsics_out", "intrinsics_out"}
        for k, v in ours.items():
            assert torch.equal(v, ref[RENAME.get(k, k)]), k


def test_graph_conditioned_and_ray_pose_equal_upstream():
    net = build_network("da3-small", seed=4)
    x = torch.randn(1, 2, 3, 140, 252, generator=torch.Generator().manual_seed(1))
    ext = torch.eye(4).repeat(1, 2, 1, 1)
    ext[0, 1, 0, 3] = -0.5
    intr = torch.tensor([[200.0, 0, 126], [0, 200, 70], [0, 0, 1]]).repeat(1, 2, 1, 1)
    ours, ref = _ours(net, x, ext=ext, intr=intr), _upstream(net, x, ext=ext, intr=intr)
    for k in ours:
        assert torch.equal(ours[k], ref[RENAME.get(k, k)]), k
    # ray poses: the aux branch feeds upstream's own solver (which samples at random): same depth, poses present
    ours, ref = _ours(net, x, use_ray_pose=True), _upstream(net, x, use_ray_pose=True)
    assert torch.equal(ours["depth"], ref["depth"]) and torch.equal(ours["depth_conf"], ref["depth_conf"])
    assert ours["extrinsics_out"].shape == ref["extrinsics"].shape and torch.isfinite(ours["extrinsics_out"]).all()


def test_the_aux_branch_is_not_computed():
    """The ray head's layers never run unless ray poses are asked for."""
    net = build_network("da3-small", seed=4)
    calls = []
    hook = net.head.scratch.output_conv2_aux[-1].register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(1, 1, 3, 140, 140)
    _ours(net, x)
    assert calls == []
    _ours(net, x, use_ray_pose=True)
    assert calls == [1]
    hook.remove()


def test_grid_positions_equal_cartesian_prod():
    for h, w in [(1, 1), (20, 36), (37, 5)]:
        ref = torch.cartesian_prod(torch.arange(h), torch.arange(w))
        assert torch.equal(export_patches.grid_positions(h, w), ref)


def test_rope_with_fixed_table_equals_original():
    from depth_anything_3.model.dinov2.layers.rope import PositionGetter, RotaryPositionEmbedding2D

    rope = RotaryPositionEmbedding2D(frequency=100.0)
    pos = PositionGetter()(2, 20, 36, torch.device("cpu")) + 1
    tokens = torch.randn(2, 6, 20 * 36, 64, generator=torch.Generator().manual_seed(2))
    ref = rope(tokens, pos)
    ours = export_patches._rope_forward(rope, tokens, pos)
    assert torch.equal(ours, ref)


def test_sincos_embedding_equals_original():
    from depth_anything_3.model.utils.head_utils import make_sincos_pos_embed

    pos = torch.linspace(-1.3, 1.3, 517)
    for dim in (32, 64, 128):
        assert torch.equal(export_patches.make_sincos_pos_embed(dim, pos), make_sincos_pos_embed(dim, pos))


def test_rigid_inverse_equals_affine_inverse():
    from depth_anything_3.utils.geometry import affine_inverse

    A = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    for M in (A, A[..., :3, :]):
        assert torch.equal(rigid_inverse(M), affine_inverse(M))


def test_export_friendly_swaps_and_restores():
    import depth_anything_3.model.utils.head_utils as hu
    from depth_anything_3.model.dinov2.layers.rope import PositionGetter

    before = (hu.make_sincos_pos_embed, PositionGetter.__call__)
    with export_patches.export_friendly():
        assert hu.make_sincos_pos_embed is export_patches.make_sincos_pos_embed
        assert PositionGetter.__call__ is export_patches._position_getter_call
    assert (hu.make_sincos_pos_embed, PositionGetter.__call__) == before


def test_numpy_sky_fill_equals_upstream_when_it_does_not_sample():
    """Upstream's fill (exact quantile below 100 000 pixels) equals ours."""
    from addict import Dict
    from depth_anything_3.model.da3 import DepthAnything3Net

    from da3_ros.engines.postprocess import fill_sky

    rng = np.random.default_rng(5)
    depth = rng.uniform(1, 10, (1, 2, 60, 80)).astype(np.float32)
    sky = (rng.uniform(0, 1, depth.shape) > 0.7).astype(np.float32)
    ref = DepthAnything3Net._process_mono_sky_estimation(None, Dict(depth=torch.from_numpy(depth),
                                                                    sky=torch.from_numpy(sky)))
    np.testing.assert_allclose(fill_sky(depth[0], sky[0]), ref.depth[0].numpy(), rtol=1e-6)


def test_nested_alignment_outside_the_graph_equals_upstream():
    """da3nested-giant-large: both branches in the graph, the metric alignment in numpy = upstream's forward."""
    from da3_ros.engines import FrameBatch
    from da3_ros.engines.torch_engine import TorchEngine
    from da3_ros.models.loading import LoadedModel
    from da3_ros.models.registry import get_variant
    from da3_ros.core.preprocess import preprocess_batch

    net = build_network("da3nested-giant-large", seed=1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (98, 140, 3), dtype=np.uint8) for _ in range(2)]
    model = LoadedModel(net, get_variant("da3nested-giant-large"), "random:da3nested-giant-large@1", False)
    ours = TorchEngine(model, process_res=140).infer(FrameBatch(images))
    x = torch.from_numpy(preprocess_batch(images, 140)[0])[None]
    with torch.inference_mode():
        ref = net(x, None, None, [], False, False, "first")  # 98x140: below upstream's sampling threshold
    assert ours.is_metric and ours.depth_scale[0] == pytest.approx(ref["scale_factor"], rel=1e-5)
    np.testing.assert_allclose(ours.depth, ref["depth"][0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.T_cam_world[:, :3, :], ref["extrinsics"][0].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["da3-small", "da3metric-large"])
def test_graph_outputs_known_without_torch_match_the_network(name):
    """What a remote server must return (engines.base.graph_outputs, torch-free) = what the graph returns."""
    from da3_ros.engines.base import graph_outputs
    from da3_ros.engines.graph import output_names
    from da3_ros.models.registry import get_variant

    assert graph_outputs(get_variant(name)) == output_names(build_network(name))


def _rotations(n: int, seed: int) -> torch.Tensor:
    """Uniform random rotations, plus the cases each of mat_to_quat's four branches handles.

    Near 180° (trace ~ -1) the real part vanishes and the branch of the largest x, y or z is taken; exact
    half-turns about the axes, about diagonals (ties between two branches) and the identity are included.
    """
    from depth_anything_3.model.utils.transform import quat_to_mat

    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    axes = torch.randn(n, 3, generator=g, dtype=torch.float64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    for eps in (1e-2, 1e-4, 1e-6, 0.0):  # rotations of pi - eps about random axes: xyz dominate w
        half = (torch.pi - eps) / 2
        q = torch.cat([q, torch.cat([axes * np.sin(half), torch.full((n, 1), np.cos(half), dtype=q.dtype)], -1)])
    special = torch.tensor([[0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0],
                            [1, 0, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, -1, 0, 0], [0, 0, 1, 1]], dtype=q.dtype)
    q = torch.cat([q, special])
    return quat_to_mat(q / q.norm(dim=-1, keepdim=True)).float()


def test_export_mat_to_quat_equals_upstream_on_every_branch():
    """The NonZero-free mat_to_quat returns exactly upstream's quaternions, branch by branch, ties included."""
    from depth_anything_3.model.utils.transform import mat_to_quat

    R = _rotations(20_000, seed=7)
    with torch.no_grad():
        ref, ours = mat_to_quat(R), export_patches.mat_to_quat(R)
    assert torch.equal(ours, ref)
    # every branch taken, so each was compared (upstream picks the largest sqrt(1 +- m00 +- m11 +- m22))
    m = R.reshape(-1, 9)
    trace_terms = torch.stack([1 + m[:, 0] + m[:, 4] + m[:, 8], 1 + m[:, 0] - m[:, 4] - m[:, 8],
                               1 - m[:, 0] + m[:, 4] - m[:, 8], 1 - m[:, 0] - m[:, 4] + m[:, 8]], -1)
    assert set(trace_terms.argmax(-1).tolist()) == {0, 1, 2, 3}
    batched = R[:24].reshape(2, 3, 4, 3, 3)  # (B, N, ...) as the pose encoder calls it, and a grad context
    assert torch.equal(export_patches.mat_to_quat(batched), mat_to_quat(batched))
    with pytest.raises(ValueError, match="3, 3"):
        export_patches.mat_to_quat(torch.zeros(2, 3, 4))


def test_export_friendly_swaps_mat_to_quat_for_the_pose_encoder():
    import depth_anything_3.model.utils.transform as transform

    before = transform.mat_to_quat
    with export_patches.export_friendly():
        assert transform.mat_to_quat is export_patches.mat_to_quat
    assert transform.mat_to_quat is before
