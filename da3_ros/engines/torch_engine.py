"""PyTorch backend: the upstream network in eager mode, fp32 on CPU, fp16/bf16 autocast on CUDA."""
from __future__ import annotations

import torch

from da3_ros.engines.base import Engine
from da3_ros.models.loading import LoadedModel

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU unless asked (upstream autocasts fp16 on CPU, 2.6x slower); bf16/fp16 on CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class TorchEngine(Engine):
    """Runs ``LoadedModel.net`` with torch on its device."""

    backend = "torch"

    def __init__(self, model: LoadedModel, precision: str = "auto", **kwargs):
        super().__init__(model, **kwargs)
        self.device = next(model.net.parameters()).device
        self.dtype = resolve_dtype(precision, self.device)

    @torch.inference_mode()
    def _forward(self, x, T_cam_world, K_proc):
        dev = self.device
        autocast = torch.autocast(device_type=dev.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
        with autocast:
            out = self.model.net(
                x.to(dev), None if T_cam_world is None else T_cam_world.to(dev),
                None if K_proc is None else K_proc.to(dev),
                export_feat_layers=[], infer_gs=False, use_ray_pose=False, ref_view_strategy=self.ref_view_strategy,
            )
        return {k: v[0].float().cpu().numpy() for k, v in out.items() if isinstance(v, torch.Tensor) and v.ndim >= 3}
