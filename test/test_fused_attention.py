"""ONNX Runtime runs each attention as one fused MultiHeadAttention node; TensorRT's graphs stay plain ONNX.

The fused graph must compute what the plain graph computes (and so what torch computes: test_onnx's parity
cases run on it), on the real photos, with the weights mapped from a sealed file beside the optimised graph.
"""
import json

import numpy as np
import onnx
import pytest

from da3_ros.engines import FrameBatch, create_engine
from da3_ros.engines.onnx_source import read_metadata
from da3_ros.export.fused_attention import MHA_DOMAIN

MODEL = "random:da3-small@3"


def _op_counts(path):
    counts: dict[tuple[str, str], int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        k = (node.domain or "ai.onnx", node.op_type)
        counts[k] = counts.get(k, 0) + 1
    return counts


def test_the_onnxruntime_graph_fuses_every_attention_and_computes_the_plain_graph(tmp_path, soh_images):
    engine = create_engine("onnxruntime", MODEL, cache_dir=str(tmp_path), process_res=280, threads=2)
    batch = FrameBatch(soh_images[:2])
    fused_pred = engine.infer(batch)
    (shape,) = engine._runners
    fused, plain = engine._graph_for(shape), engine.source.onnx_for(*shape)  # plain: what TensorRT gets
    assert fused != plain
    fused_ops, plain_ops = _op_counts(fused), _op_counts(plain)
    n_attention = plain_ops.get(("ai.onnx", "Softmax"), 0)  # the plain graph's softmaxes are its attentions
    assert n_attention >= 12  # da3-small's backbone: 12 blocks, each one attention
    assert fused_ops.get((MHA_DOMAIN, "MultiHeadAttention")) == n_attention
    assert ("ai.onnx", "Softmax") not in fused_ops  # no score tensor is materialised anywhere
    assert not any(domain == MHA_DOMAIN for domain, _ in plain_ops)  # TensorRT's parser reads every node
    assert read_metadata(fused)["attention"] == "com.microsoft::MultiHeadAttention"
    assert read_metadata(plain)["attention"] == "onnx"

    plain_pred = create_engine("onnxruntime", str(plain), cache_dir=str(tmp_path / "plain"), threads=2,
                               process_res=280).infer(batch)
    for field in ("depth", "confidence", "T_cam_world"):
        a = np.asarray(getattr(fused_pred, field), np.float64).ravel()
        b = np.asarray(getattr(plain_pred, field), np.float64).ravel()
        assert a.size == b.size > 0 and np.isfinite(a).all(), field
        assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-12), field

    # The optimised copy the session loaded keeps its weights in a file beside it, hashed in its sidecar.
    (opt,) = [p for p in tmp_path.glob("ort-cpu-*.onnx")]
    weights = opt.with_name(opt.name + ".data")
    meta = json.loads(opt.with_name(opt.name + ".meta.json").read_text())
    assert weights.stat().st_size > 0.5 * fused.stat().st_size and meta["key"]["initializers"] == "external"
    assert "data_sha256" in meta


def test_the_fp16_graph_refuses_fused_attention(tmp_path):
    from da3_ros.export.onnx_export import export_onnx
    from da3_ros.models import load_model

    model = load_model(MODEL)
    with pytest.raises(ValueError, match="TensorRT"):
        export_onnx(model.net, model.variant.name, tmp_path / "g.onnx", 1, (140, 140), precision="fp16",
                    fused_attention=True)
    assert not (tmp_path / "g.onnx").exists()
