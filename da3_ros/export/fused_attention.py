"""Attention as ONE ONNX Runtime ``com.microsoft.MultiHeadAttention`` node, for graphs that only ONNX Runtime runs.

The TorchScript exporter writes ``scaled_dot_product_attention`` as MatMul -> Softmax -> MatMul: the whole
(heads, tokens, tokens) score tensor is materialised, 50 MB per layer for two 504x280 views of da3-small and
growing with the square of the views. ONNX Runtime's MultiHeadAttention runs the same maths tile by tile (its
CPU kernel is MLAS flash attention when queries, keys and values come as (batch, tokens, heads x head size)
and nothing else is attached), so the score tensor never exists.

``fused_attention()`` swaps ``torch.nn.functional.scaled_dot_product_attention`` while exporting: a call
without mask, dropout or causality becomes an autograd Function whose forward is upstream's own attention (so
tracing computes exactly what upstream computes) and whose ONNX symbolic is MultiHeadAttention with the same
scale. Other calls go to the original. The op is a contrib op: TensorRT's parser and plain ONNX
tools do not know it, so only the ONNX Runtime backend asks for these graphs (their cache key says so).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from da3_ros.engines.onnx_source import FUSED_ATTENTION_OP as MHA_OP

MHA_DOMAIN = MHA_OP.split("::")[0]
_ORIGINAL_SDPA = F.scaled_dot_product_attention


def _to_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(batch, tokens, heads x head size) -> (batch, heads, tokens, head size)."""
    b, s, d = t.shape
    return t.reshape(b, s, num_heads, d // num_heads).transpose(1, 2)


def _from_heads(t: torch.Tensor) -> torch.Tensor:
    """(batch, heads, tokens, head size) -> (batch, tokens, heads x head size)."""
    b, h, s, dh = t.shape
    return t.transpose(1, 2).reshape(b, s, h * dh)


class _MultiHeadAttention(torch.autograd.Function):
    """Upstream's attention on (batch, tokens, heads x head size) tensors, exported as MultiHeadAttention.

    An autograd Function with a ``symbolic``, not a ``torch.library`` custom op: a custom op's kernel runs under
    torch._dynamo's guard, whose first call imports torch._dynamo (1.1 of an export child's 4.8 s, measured).
    """

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_heads: int,
                scale: float) -> torch.Tensor:
        out = _ORIGINAL_SDPA(_to_heads(query, num_heads), _to_heads(key, num_heads), _to_heads(value, num_heads),
                             scale=scale)
        return _from_heads(out).contiguous()

    @staticmethod
    def symbolic(g: Any, query: Any, key: Any, value: Any, num_heads: int, scale: float) -> Any:
        out = g.op(MHA_OP, query, key, value, num_heads_i=int(num_heads), scale_f=float(scale))
        out.setType(query.type())
        return out


def _sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
          dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, **kwargs: Any) -> torch.Tensor:
    plain = attn_mask is None and dropout_p == 0.0 and not is_causal and not kwargs
    if not plain or query.dim() != 4 or key.shape != query.shape or value.shape[:3] != query.shape[:3]:
        return _ORIGINAL_SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                              scale=scale, **kwargs)
    heads, head_size = int(query.shape[1]), int(query.shape[3])  # constants of the trace
    s = float(scale) if scale is not None else head_size ** -0.5  # SDPA's default scale
    out = _MultiHeadAttention.apply(_from_heads(query), _from_heads(key), _from_heads(value), heads, s)
    return _to_heads(out, heads)  # the caller turns it back to (batch, tokens, channels): two Transposes cancel


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """While exporting, trace every plain attention as MultiHeadAttention (restored afterwards)."""
    F.scaled_dot_product_attention = _sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = _ORIGINAL_SDPA
