"""The inference graph: upstream's DA3 network minus what da3_ros never uses, as one torch module.

Upstream's ``DepthAnything3Net.forward`` always runs the DualDPT head's auxiliary ray branch (a second fusion
pyramid and output stack) and then throws it away unless ray-based poses are asked for, recomputes the head's
position embeddings at every call, and fills sky with a data-dependent quantile. ``InferenceGraph`` runs the
same layers with the same weights in the same order, minus those: the auxiliary branch only when
``use_ray_pose`` is set, embeddings cached per size, sky fill left to the (numpy) post-processing. It is what
the torch backend runs and what ``da3_ros.export.onnx_export`` writes to ONNX, so every backend computes one graph.
Parity with upstream is proven in test/test_graph.py. Imports torch: used by the torch backend and export only.
"""
from __future__ import annotations

from typing import Any

import torch

from torch import nn

# Graph output names (inputs: da3_ros.engines.base), shared by the export, the backends and the post-processing.
OUT_DEPTH, OUT_CONF, OUT_EXTRINSICS, OUT_INTRINSICS = "depth", "depth_conf", "extrinsics_out", "intrinsics_out"
OUT_SKY, OUT_METRIC_DEPTH = "sky", "metric_depth"


def output_names(net: Any) -> list[str]:
    """The graph outputs of a network, in order."""
    if _is_nested(net):
        return [OUT_DEPTH, OUT_CONF, OUT_EXTRINSICS, OUT_INTRINSICS, OUT_METRIC_DEPTH, OUT_SKY]
    names = [OUT_DEPTH]
    if getattr(net.head, "has_conf", True):
        names.append(OUT_CONF)
    if net.cam_dec is not None:
        names += [OUT_EXTRINSICS, OUT_INTRINSICS]
    if getattr(net.head, "use_sky_head", False):
        names.append(OUT_SKY)
    return names


def _is_nested(net: Any) -> bool:
    return hasattr(net, "da3") and hasattr(net, "da3_metric")


class InferenceGraph(nn.Module):
    """``forward(images[1,N,3,H,W], extrinsics[1,N,4,4]?, intrinsics[1,N,3,3]?)`` -> tuple in ``output_names``.

    The reference view is view 0 (``ref_view_strategy="first"``, always in an export), so the graph has no
    data-dependent view selection. ``extrinsics`` are world-to-camera; given, they condition the camera encoder.
    """

    def __init__(self, net: Any, use_ray_pose: bool = False, ref_view_strategy: str = "first"):
        super().__init__()
        self.net = net
        self.use_ray_pose = use_ray_pose
        self.ref_view_strategy = ref_view_strategy  # anything but "first" is eager-only (data-dependent)
        self.names = output_names(net)
        self._pe_cache: dict[tuple, torch.Tensor] = {}

    def forward(self, images: torch.Tensor, extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if _is_nested(self.net):
            out = self._branch(self.net.da3, images, extrinsics, intrinsics)
            metric = self._branch(self.net.da3_metric, images, None, None)
            out[OUT_METRIC_DEPTH], out[OUT_SKY] = metric[OUT_DEPTH], metric[OUT_SKY]
        else:
            out = self._branch(self.net, images, extrinsics, intrinsics)
        return tuple(out[name] for name in self.names)

    def _branch(self, net: Any, x: torch.Tensor, extrinsics: torch.Tensor | None,
                intrinsics: torch.Tensor | None) -> dict[str, torch.Tensor]:
        # Autocast scopes mirror upstream's forward: camera encoder, heads and pose decoding run in fp32.
        no_autocast = torch.autocast(device_type=x.device.type, enabled=False)
        cam_token = None
        if extrinsics is not None and net.cam_enc is not None:
            with no_autocast:
                cam_token = net.cam_enc(extrinsics, intrinsics, x.shape[-2:])
        feats, _ = net.backbone(x, cam_token=cam_token, export_feat_layers=[],
                                ref_view_strategy=self.ref_view_strategy)
        H, W = x.shape[-2], x.shape[-1]
        with no_autocast:
            out = self._head(net.head, feats, H, W)
            if net.cam_dec is not None and not self.use_ray_pose:
                from depth_anything_3.model.utils.transform import pose_encoding_to_extri_intri

                c2w, K = pose_encoding_to_extri_intri(net.cam_dec(feats[-1][1]), (H, W))
                out[OUT_EXTRINSICS], out[OUT_INTRINSICS] = rigid_inverse(c2w), K
            elif net.cam_dec is not None:
                out.update(_ray_poses(net, out, H, W))
        return out

    def _head(self, head: Any, feats: list, H: int, W: int) -> dict[str, torch.Tensor]:
        """DPT / DualDPT main (and sky) outputs, views processed in chunks of 8 as upstream does."""
        B, S, N, C = feats[0][0].shape
        tokens = [f[0].reshape(B * S, N, C) for f in feats]
        chunks = [self._head_chunk(head, [t[s:s + 8] for t in tokens], H, W) for s in range(0, B * S, 8)]
        return {k: torch.cat([c[k] for c in chunks]).reshape(B, S, *chunks[0][k].shape[1:]) for k in chunks[0]}

    def _head_chunk(self, head: Any, tokens: list[torch.Tensor], H: int, W: int) -> dict[str, torch.Tensor]:
        dual = hasattr(head, "head_aux")
        b, _, c = tokens[0].shape
        ph, pw = H // head.patch_size, W // head.patch_size
        levels = []
        for stage, take in enumerate(head.intermediate_layer_idx):
            x = head.norm(tokens[take]).permute(0, 2, 1).reshape(b, c, ph, pw)
            x = head.projects[stage](x)
            if head.pos_embed:
                x = x + self._pos_embed(x, W, H)
            levels.append(head.resize_layers[stage](x))
        s = head.scratch
        rn = [s.layer1_rn(levels[0]), s.layer2_rn(levels[1]), s.layer3_rn(levels[2]), s.layer4_rn(levels[3])]
        fused = s.output_conv1(_fuse(s, rn))
        from depth_anything_3.model.utils.head_utils import custom_interpolate

        hw_out = (int(ph * head.patch_size / head.down_ratio), int(pw * head.patch_size / head.down_ratio))
        fused = custom_interpolate(fused, hw_out, mode="bilinear", align_corners=True)
        if head.pos_embed:
            fused = fused + self._pos_embed(fused, W, H)
        out = self._activate(head, s.output_conv2(fused))
        if dual and self.use_ray_pose:  # the auxiliary ray branch, only when its output is used
            out.update(_aux_rays(head, rn, self._pos_embed, W, H))
        if getattr(head, "use_sky_head", False):
            out[OUT_SKY] = head._apply_sky_activation(s.sky_output_conv2(fused)).squeeze(1)
        return out

    @staticmethod
    def _activate(head: Any, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if not getattr(head, "has_conf", True):
            return {OUT_DEPTH: head._apply_activation_single(logits, head.activation).squeeze(1)}
        fmap = logits.permute(0, 2, 3, 1)
        return {OUT_DEPTH: head._apply_activation_single(fmap[..., :-1], head.activation).squeeze(-1),
                OUT_CONF: head._apply_activation_single(fmap[..., -1], head.conf_activation)}

    def _pos_embed(self, x: torch.Tensor, W: int, H: int, ratio: float = 0.1) -> torch.Tensor:
        """Upstream's UV sin/cos embedding for a feature map like ``x``: a constant of its size, cached."""
        key = (x.shape[1], x.shape[2], x.shape[3], W / H, x.dtype, x.device)
        pe = self._pe_cache.get(key)
        if pe is None:
            from depth_anything_3.model.utils.head_utils import create_uv_grid, position_grid_to_embed

            grid = create_uv_grid(x.shape[-1], x.shape[-2], aspect_ratio=W / H, dtype=x.dtype, device=x.device)
            pe = (position_grid_to_embed(grid, x.shape[1]) * ratio).permute(2, 0, 1)[None]
            if not torch.jit.is_tracing():  # a traced constant must not leak into eager calls
                self._pe_cache[key] = pe
        return pe


def rigid_inverse(A: torch.Tensor) -> torch.Tensor:
    """Upstream's ``affine_inverse`` ([R|t] -> [R^T | -R^T t], extra rows kept) with ``transpose`` for ``.mT``."""
    R, t, rest = A[..., :3, :3], A[..., :3, 3:], A[..., 3:, :]
    R_inv = R.transpose(-1, -2)
    return torch.cat([torch.cat([R_inv, -R_inv @ t], dim=-1), rest], dim=-2)


def _fuse(scratch: Any, rn: list[torch.Tensor], branch: str = "") -> torch.Tensor:
    """The DPT fusion pyramid, coarsest level first; ``branch="_aux"`` is DualDPT's separate ray pyramid."""
    l1, l2, l3, l4 = rn
    x = getattr(scratch, f"refinenet4{branch}")(l4, size=l3.shape[2:])
    x = getattr(scratch, f"refinenet3{branch}")(x, l3, size=l2.shape[2:])
    x = getattr(scratch, f"refinenet2{branch}")(x, l2, size=l1.shape[2:])
    return getattr(scratch, f"refinenet1{branch}")(x, l1)


def _aux_rays(head: Any, rn: list[torch.Tensor], pos_embed: Any, W: int, H: int) -> dict[str, torch.Tensor]:
    s = head.scratch
    aux = s.output_conv1_aux[-1](_fuse(s, rn, "_aux"))
    if head.pos_embed:
        aux = aux + pos_embed(aux, W, H)
    fmap = s.output_conv2_aux[-1](aux).permute(0, 2, 3, 1)
    return {"ray": fmap[..., :-1], "ray_conf": head._apply_activation_single(fmap[..., -1], head.conf_activation)}


def _ray_poses(net: Any, out: dict[str, torch.Tensor], H: int, W: int) -> dict[str, torch.Tensor]:
    """Poses from the auxiliary ray map (upstream's ``use_ray_pose``); eager torch only, not exported."""
    from addict import Dict

    res = net._process_ray_pose_estimation(Dict(ray=out.pop("ray"), ray_conf=out.pop("ray_conf")), H, W)
    return {OUT_EXTRINSICS: res.extrinsics, OUT_INTRINSICS: res.intrinsics}
