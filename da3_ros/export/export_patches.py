"""Export-friendly equivalents of the few upstream functions that block ONNX export, applied only while exporting.

Each replacement computes exactly what the original computes (test/test_export.py proves it, element for
element) with operators the ONNX exporter and ONNX Runtime accept:

- ``PositionGetter.__call__``: ``torch.cartesian_prod`` has no ONNX symbolic -> a meshgrid of the same order.
- ``RotaryPositionEmbedding2D.forward``: ``int(positions.max())`` sizes the cos/sin table from data -> a table of
  fixed length ``ROPE_TABLE_LEN`` (row p depends on p alone, so the rows used are identical).
- ``make_sincos_pos_embed``: ``python_float ** tensor`` exports as a double-precision Pow feeding a float Einsum,
  which ONNX Runtime rejects -> the base as a float32 tensor.
- ``affine_inverse``: ``.mT`` is unknown to the TorchScript exporter -> ``transpose(-1, -2)``.
- ``mat_to_quat`` (pose conditioning): picking the best-conditioned of four candidate quaternions by boolean
  indexing exports as NonZero -> GatherND, a data-dependent shape TensorRT cannot build statically -> the same
  choice (the first largest ``q_abs``, as ``argmax`` breaks ties) made with comparisons and ``torch.where``.
"""
from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import torch

from da3_ros.engines.graph import rigid_inverse

ROPE_TABLE_LEN = 1024  # patch rows/columns: images up to 14 336 px on a side


def grid_positions(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """(height*width, 2) integer (y, x) pairs in row-major order, as ``torch.cartesian_prod(arange(h), arange(w))``."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=-1)


def _position_getter_call(self, batch_size: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    if (height, width) not in self.position_cache:
        self.position_cache[height, width] = grid_positions(height, width, device)
    return self.position_cache[height, width].view(1, height * width, 2).expand(batch_size, -1, -1).clone()


def _rope_forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    feature_dim = tokens.size(-1) // 2
    cos_comp, sin_comp = self._compute_frequency_components(feature_dim, ROPE_TABLE_LEN, tokens.device, tokens.dtype)
    vertical, horizontal = tokens.chunk(2, dim=-1)
    vertical = self._apply_1d_rope(vertical, positions[..., 0], cos_comp, sin_comp)
    horizontal = self._apply_1d_rope(horizontal, positions[..., 1], cos_comp, sin_comp)
    return torch.cat((vertical, horizontal), dim=-1)


def make_sincos_pos_embed(embed_dim: int, pos: torch.Tensor, omega_0: float = 100) -> torch.Tensor:
    """Upstream's 1-D sin/cos embedding with the power taken on a float32 base (same values)."""
    omega = torch.arange(embed_dim // 2, dtype=torch.float32, device=pos.device)
    omega /= embed_dim / 2.0
    omega = 1.0 / torch.pow(torch.tensor(omega_0, dtype=torch.float32, device=pos.device), omega)
    out = pos.reshape(-1)[:, None] * omega[None, :]  # the outer product einsum("m,d->md") computes
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1).float()


def mat_to_quat(matrix: torch.Tensor) -> torch.Tensor:
    """Upstream's rotation matrix (..., 3, 3) -> unit quaternion (..., 4, xyzw, w >= 0), without boolean indexing.

    Same arithmetic as ``depth_anything_3.model.utils.transform.mat_to_quat`` (bit for bit): four candidates,
    each divided by twice its own ``max(q_abs, 0.1)``; the one with the largest ``q_abs`` is kept. The choice is
    static-shaped: ``first_i`` marks the first maximum (argmax's tie rule), and a chain of ``where`` selects.
    """
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"mat_to_quat needs rotation matrices of shape (..., 3, 3), got {tuple(matrix.shape)}")
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(matrix.reshape(matrix.shape[:-2] + (9,)), dim=-1)
    s = torch.stack([1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22,
                     1.0 - m00 - m11 + m22], dim=-1)
    q_abs = torch.where(s > 0, torch.sqrt(s), torch.zeros_like(s))  # upstream's _sqrt_positive_part
    rows = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1)], dim=-2)
    floor = torch.tensor(0.1, dtype=q_abs.dtype, device=q_abs.device)
    candidates = rows / (2.0 * q_abs[..., None].max(floor))
    a = q_abs.unbind(-1)
    first = [(a[0] >= a[1]) & (a[0] >= a[2]) & (a[0] >= a[3]),  # a tie goes to the lower index, as argmax
             (a[1] > a[0]) & (a[1] >= a[2]) & (a[1] >= a[3]),
             (a[2] > a[0]) & (a[2] > a[1]) & (a[2] >= a[3])]
    wxyz = candidates[..., 3, :]
    for i in (2, 1, 0):
        wxyz = torch.where(first[i][..., None], candidates[..., i, :], wxyz)
    xyzw = torch.cat([wxyz[..., 1:], wxyz[..., :1]], dim=-1)
    return torch.where(xyzw[..., 3:4] < 0, -xyzw, xyzw)  # upstream's standardize_quaternion: w >= 0


def _targets() -> list[tuple[Any, str, Any]]:
    rope = importlib.import_module("depth_anything_3.model.dinov2.layers.rope")
    head_utils = importlib.import_module("depth_anything_3.model.utils.head_utils")
    targets = [(rope.PositionGetter, "__call__", _position_getter_call),
               (rope.RotaryPositionEmbedding2D, "forward", _rope_forward),
               (head_utils, "make_sincos_pos_embed", make_sincos_pos_embed)]
    transform = importlib.import_module("depth_anything_3.model.utils.transform")
    targets.append((transform, "mat_to_quat", mat_to_quat))  # extri_intri_to_pose_encoding looks it up there
    for mod in ("depth_anything_3.utils.geometry", "depth_anything_3.model.da3", "depth_anything_3.model.cam_enc"):
        targets.append((importlib.import_module(mod), "affine_inverse", rigid_inverse))
    return targets


@contextlib.contextmanager
def export_friendly() -> Iterator[None]:
    """Swap in the equivalents above for the duration of an export; the originals are restored afterwards."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in _targets()]
    try:
        for obj, name, new in _targets():
            setattr(obj, name, new)
        yield
    finally:
        for obj, name, old in saved:
            setattr(obj, name, old)
