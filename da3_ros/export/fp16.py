"""Mixed fp16 ONNX: matrix work and element-wise layers in fp16, everything else kept in fp32, float32 I/O.

TensorRT 11 builds only strongly typed networks (the weak-typing ``BuilderFlag.FP16`` is gone), so the
precision of every tensor must be in the graph itself. Only the operators in ``FP16_OPS`` run in fp16: the
convolutions, matrix products and the cheap ops around them. Normalisations, softmax, reductions, division,
exp/erf/trig and resizes stay fp32 because fp16's range (max 65504) and 10-bit mantissa are not enough there.
Casts are inserted only where a tensor's type changes; weights used only by fp16 ops are stored in fp16.
(onnxconverter-common's converter fails on these graphs: shared initialisers and in-graph Casts.)
The graph comes from ONNX Runtime's constant folding, which writes ``reduction="none"`` on every ScatterND;
TensorRT's ONNX parser before 10.9 (JetPack 6 ships 10.3) rejects that attribute whenever present, so the
default is dropped again (``strip_default_scatter_reduction``): "none" is what ScatterND does without it.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

FP16_OPS = frozenset({
    "MatMul", "Gemm", "Conv", "ConvTranspose", "Add", "Sub", "Mul", "Neg", "Relu", "Sigmoid", "Tanh", "Concat",
    "Reshape", "Transpose", "Slice", "Split", "Squeeze", "Unsqueeze", "Gather", "Expand", "Tile", "Flatten",
    "Identity",
})  # not ScatterND: the pose decoder assembles K with it, and a focal in pixels can exceed fp16's range


def strip_default_scatter_reduction(model) -> int:
    """Remove ``reduction="none"`` (ScatterND's default) from every ScatterND of ``model`` in place; the count.

    Identical semantics; TensorRT < 10.9 refuses any ``reduction`` attribute ("Attribute reduction is not
    supported"). A real reduction (add, mul, max, min) is kept: that graph needs TensorRT 10.9+.
    """
    removed = 0
    for node in model.graph.node:
        if node.op_type != "ScatterND":
            continue
        keep = [a for a in node.attribute if not (a.name == "reduction" and a.s in (b"", b"none"))]
        removed += len(node.attribute) - len(keep)
        del node.attribute[:]
        node.attribute.extend(keep)
    return removed


ASIDE_BYTES = 1 << 16  # initialisers this large are held aside during shape inference


def infer_shapes_in_place(model) -> None:
    """Infer every tensor's type and shape of ``model`` (strict) into its ``value_info``, weights held aside.

    ONNX's shape inference serialises the whole model, weights included, to hand it to C++: about 3 s per GB,
    twice per fp16 conversion of a ViT-L (1.3 GB). Shapes need only the initialisers' types and dims, so it
    runs on a skeleton of the model whose large initialisers carry no bytes, never copying them (moving a ViT-L's
    bytes out and back took 0.6-1.0 s per call; the skeleton 0.1 s, same value_info).
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(_skeleton(model), strict_mode=True)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)


def _skeleton(model):
    """``model``'s graph with each initialiser of ``ASIDE_BYTES`` or more reduced to its name, type and dims."""
    import onnx
    from onnx import TensorProto

    light, g = onnx.ModelProto(ir_version=model.ir_version), model.graph
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    light.graph.name = g.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(light.graph, field).extend(getattr(g, field))
    for t in g.initializer:
        if t.ByteSize() < ASIDE_BYTES:  # small ones (shapes, axes) may be read by inference: kept whole
            light.graph.initializer.add().CopyFrom(t)
            continue
        stub = light.graph.initializer.add(name=t.name, dims=t.dims, data_type=t.data_type,
                                           data_location=TensorProto.EXTERNAL)
        stub.external_data.add(key="location", value="held-aside-in-memory")
    return light


def to_mixed_fp16(model, fp16_ops: frozenset[str] = FP16_OPS):
    """Return a copy of ``model`` (an onnx ModelProto) with ``fp16_ops`` computing in fp16."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    original, model = model, onnx.ModelProto()
    model.CopyFrom(original)
    infer_shapes_in_place(model)
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        raise ValueError("graphs with control flow (subgraphs) are not supported by the fp16 conversion")
    dtype = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.output, *g.value_info]}
    dtype.update({t.name: t.data_type for t in g.initializer})
    consumers: dict[str, list] = defaultdict(list)
    for node in g.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in g.output}
    for t in g.initializer:  # weights only fp16 ops read: store them in fp16 (half the size)
        users = consumers.get(t.name, [])
        if t.data_type == FLOAT and users and t.name not in outputs and all(n.op_type in fp16_ops for n in users):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
            dtype[t.name] = HALF
    nodes, casts = [], {}

    def cast(name: str, to: int) -> str:
        if (name, to) not in casts:
            out = f"{name}__as_{'fp16' if to == HALF else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{out}__cast"))
            casts[name, to] = out
        return casts[name, to]

    for node in g.node:
        half = node.op_type in fp16_ops
        want = HALF if half else FLOAT
        for i, name in enumerate(node.input):
            if name and dtype.get(name) in (FLOAT, HALF) and dtype[name] != want and node.op_type != "Shape":
                node.input[i] = cast(name, want)
        nodes.append(node)
        if half:
            for name in node.output:
                if dtype.get(name) == FLOAT:
                    dtype[name] = HALF
    for o in g.output:  # float32 outputs whatever computed them
        if dtype.get(o.name) == HALF:
            inner = f"{o.name}__fp16"
            for n in nodes:
                n.output[:] = [inner if x == o.name else x for x in n.output]
                n.input[:] = [inner if x == o.name else x for x in n.input]
            nodes.append(helper.make_node("Cast", [inner], [o.name], to=FLOAT, name=f"{o.name}__cast"))
    del g.node[:]
    g.node.extend(nodes)
    strip_default_scatter_reduction(model)
    del g.value_info[:]  # stale types: let inference recompute them
    infer_shapes_in_place(model)
    onnx.checker.check_model(model)
    return model
