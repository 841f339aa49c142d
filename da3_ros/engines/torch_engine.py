"""PyTorch backend: ``InferenceGraph`` in eager mode, fp32 on CPU, fp16/bf16 autocast on CUDA."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from da3_ros.engines.base import Engine, EngineConfigError, EngineSettings
from da3_ros.engines.graph import InferenceGraph
from da3_ros.models.loading import LoadedModel

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU unless asked (upstream autocasts fp16 on CPU, 2.6x slower); bf16/fp16 on CUDA."""
    if precision not in PRECISIONS:
        raise EngineConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class TorchEngine(Engine):
    """Runs ``LoadedModel.net`` through ``InferenceGraph`` with torch on its device.

    ``use_ray_pose`` takes poses from the auxiliary ray map (upstream's option) instead of the camera decoder;
    only then is that branch computed.
    """

    backend = "torch"

    def __init__(self, model: LoadedModel, precision: str = "auto", use_ray_pose: bool = False, **kwargs: Any) -> None:
        super().__init__(model.variant, model.label, model.trained, **kwargs)
        self.model = model
        self.device = next(model.net.parameters()).device
        self.dtype = resolve_dtype(precision, self.device)
        names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
        self.runs_on = EngineSettings(self.backend, str(self.device), names[self.dtype])
        self.graph = InferenceGraph(model.net, use_ray_pose=use_ray_pose,
                                    ref_view_strategy=self.ref_view_strategy).eval()

    @torch.inference_mode()
    def _forward(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        dev = self.device
        args = [torch.from_numpy(feeds[k]).to(dev) if k in feeds else None
                for k in ("images", "extrinsics", "intrinsics")]
        with torch.autocast(device_type=dev.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.graph(*args)
        return {name: t[0].float().cpu().numpy() for name, t in zip(self.graph.names, out)}
