"""Every graph da3_ros exports parses on TensorRT 10.3 (JetPack 6), the oldest TensorRT our users run.

No TensorRT is needed: each exported graph (fp32 and fp16, pose-conditioned or not, one variant per family) is
walked and checked against what onnx-tensorrt's ``docs/operators.md`` documents: supported operators, the types
each accepts, the attribute restrictions that apply to our graphs, the ONNX data types, and static shapes
(TensorRT builds these fixed-shape engines without data-dependent shapes).

Source of the data below: github.com/onnx/onnx-tensorrt, ``docs/operators.md``. The brief asked for the
``release/10.3`` copy; the newest copy readable here is branch ``10.1-GA`` (commit 96e7811, "ONNX-TensorRT 10.1
GA release"; TensorRT 10.0/10.1, opsets 9-20). TensorRT 10.3 only adds to it, so checking against 10.1 is at
least as strict. The ScatterND ``reduction`` restriction listed there held until TensorRT ~10.9 (issue 17).
Variants: da3-small stands for the any-view family (small/base/large/giant share its layers: DINOv2 + DualDPT +
camera encoder/decoder); da3metric-large for the mono/metric family (DPT head with sky). da3-giant and
da3nested-giant-large (1.4 G parameters, >2 GB graphs) are too heavy to export on a 2-core, 24 GB test machine.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from conftest import module_dir
from da3_ros.export.fp16 import infer_shapes_in_place, strip_default_scatter_reduction, to_mixed_fp16

DOC = "onnx/onnx-tensorrt docs/operators.md @ 10.1-GA (96e7811), checked for TensorRT 10.3"
MAX_IR_VERSION = 8  # ONNX 1.10's (2021), older than any TensorRT 10's bundled ONNX; what torch writes today
OPSET_RANGE = (9, 20)  # "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20"

# Operators marked supported ("Y") in the matrix.
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear
Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid
HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization
Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Supported types of the operators our graphs use ("Supported Types" column), checked on the data input.
F, H, BF, I32, I64, B = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT32,
                         TensorProto.INT64, TensorProto.BOOL)
FLOATS, NUMBERS, ANY = {F, H, BF}, {F, H, BF, I32, I64}, {F, H, BF, I32, I64, B}
OP_TYPES: dict[str, set[int]] = {
    **dict.fromkeys("Atan Clip Conv ConvTranspose Cos Einsum Erf Exp Gemm LayerNormalization MatMul Pow Reciprocal "
                    "Resize Sigmoid Sin Softmax Sqrt Tan Tanh".split(), FLOATS),
    **dict.fromkeys("Add ArgMax Div Equal Greater GreaterOrEqual Less Max Mul Neg Range ReduceSum Relu ScatterND "
                    "Sub".split(), NUMBERS),
    **dict.fromkeys("Concat Constant ConstantOfShape Expand Flatten Gather Identity OneHot Reshape Shape Slice Split "
                    "Squeeze Tile Transpose Unsqueeze Where".split(), ANY),
    "Cast": ANY | {TensorProto.UINT8}, "And": {B}, "Not": {B}, "Or": {B},
}
DATA_INPUT = {"Where": 1}  # the input whose type the column means (default 0; Where's 0 is the bool condition)
ONNX_TYPES = {F, H, BF, I32, I64, B}  # DOUBLE only "limited" (cast down with clamping): none in our graphs
IO_TYPES = {F}  # our graphs take and return float32 whatever they compute in

# Attribute restrictions (the "Restrictions" column) of the operators that can appear in our graphs.
REJECTED_ATTRIBUTES = {"ScatterND": {"reduction"}}  # any value, "none" included, before TensorRT ~10.9
RESIZE = {"coordinate_transformation_mode": {b"half_pixel", b"pytorch_half_pixel", b"tf_half_pixel_for_nn",
                                             b"asymmetric", b"align_corners"},
          "mode": {b"nearest", b"linear", b"cubic"},  # cubic: see CUBIC_NOTE
          "nearest_mode": {b"floor", b"ceil", b"round_prefer_floor", b"round_prefer_ceil"},
          "keep_aspect_ratio_policy": {b"stretch"}, "antialias": {0}}
CUBIC_NOTE = ("the doc's Resize row lists nearest and linear only, but the 10.1-GA parser (onnxOpImporters.cpp, "
              "Resize importer) maps mode cubic to InterpolationMode::kCUBIC for the innermost 2 dimensions: our "
              "fp32 graphs hold one (DINOv2's positional-embedding interpolation), which is checked for that")
CONSTANT_INPUTS = {  # "`axes` must be an initializer" (and OneHot's depth a build-time constant): input index
    **dict.fromkeys(["Slice"], (3,)), **dict.fromkeys(["Squeeze", "Unsqueeze", "Pad"], (1, 3)),
    **{op: (1,) for op in ("ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
                           "ReduceProd ReduceSum ReduceSumSquare CumSum OneHot").split()},
}
SPATIAL_RANK = {"Conv": (4, 5), "ConvTranspose": (4, 5), "AveragePool": (4, 5), "MaxPool": (4, 5)}  # 2D/3D only
DATA_DEPENDENT_SHAPE_OPS = {"NonZero", "Unique", "Compress", "NonMaxSuppression"}  # output size from values

HW, VIEWS = (98, 140), 2  # process_res 140 of a landscape camera: small and fast, same operators as 504
GRAPHS = [("da3-small", False, "fp32"), ("da3-small", False, "fp16"), ("da3-small", True, "fp32"),
          ("da3-small", True, "fp16"), ("da3metric-large", False, "fp32"), ("da3metric-large", False, "fp16")]


@pytest.fixture(scope="module")
def graph_dir(request, tmp_path_factory) -> Iterator[Path]:
    yield from module_dir(request, tmp_path_factory, "trt-compat")  # the graphs (2 GB) go with the module


@pytest.fixture(scope="module")
def exported(graph_dir):
    """variant, conditioned, precision -> the exported graph (both precisions from one trace, on first use)."""
    from da3_ros.export.onnx_export import export_onnx_precisions
    from da3_ros.models.loading import build_network

    paths: dict[tuple[str, bool, str], Path] = {}

    def get(variant: str, conditioned: bool, precision: str) -> Path:
        if (variant, conditioned, precision) not in paths:
            precisions = [p for v, c, p in GRAPHS if (v, c) == (variant, conditioned)]
            outs = {p: graph_dir / f"{variant}-{'cond' if conditioned else 'plain'}-{p}.onnx" for p in precisions}
            written = export_onnx_precisions(build_network(variant, seed=0), variant, outs, VIEWS, HW, conditioned,
                                             trained=False)
            paths.update({(variant, conditioned, p): path for p, path in written.items()})
        return paths[(variant, conditioned, precision)]

    return get


def _constants(g: onnx.GraphProto) -> set[str]:
    return {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}


def _attr(node: onnx.NodeProto, name: str):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def tensorrt_103_violations(model: onnx.ModelProto) -> list[str]:
    """Every construct of ``model`` that TensorRT 10.3's ONNX parser rejects, per DOC; [] when it parses."""
    # Other domains' imports are only recorded by the parser (ModelImporter.cpp); a node using one is flagged below.
    bad = [f"opset {o.version} outside {OPSET_RANGE}" for o in model.opset_import
           if o.domain in ("", "ai.onnx") and not OPSET_RANGE[0] <= o.version <= OPSET_RANGE[1]]
    bad += [f"IR version {model.ir_version} > {MAX_IR_VERSION}"] if model.ir_version > MAX_IR_VERSION else []
    inferred = onnx.ModelProto()
    inferred.CopyFrom(model)
    infer_shapes_in_place(inferred)  # strict, the weights held aside (ViT-L: 1.3 GB not serialised for it)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    bad += [f"{t.name}: {TensorProto.DataType.Name(t.data_type)} initializer" for t in g.initializer
            if t.data_type not in ONNX_TYPES]
    bad += [f"graph I/O {vi.name}: {TensorProto.DataType.Name(vi.type.tensor_type.elem_type)}"
            for vi in [*g.input, *g.output] if vi.type.tensor_type.elem_type not in IO_TYPES]
    constants, used = _constants(g), {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for n in g.node:
        bad += [f"{n.name} ({n.op_type}): {why}" for why in _node_violations(n, types, constants, used)]
    return bad


def _node_violations(n: onnx.NodeProto, types: dict[str, int], constants: set[str], used: set[str]) -> list[str]:
    if n.domain not in ("", "ai.onnx"):
        return [f"custom domain {n.domain!r}"]
    if n.op_type not in SUPPORTED_OPS:
        return ["operator not supported"]
    if n.op_type in DATA_DEPENDENT_SHAPE_OPS:
        return ["output shape depends on the data"]
    bad = [f"attribute {a.name!r} rejected" for a in n.attribute if a.name in REJECTED_ATTRIBUTES.get(n.op_type, ())]
    if n.op_type not in OP_TYPES:
        return bad + [f"no Supported Types row for {n.op_type} here: add it from the doc"]
    data = n.input[DATA_INPUT.get(n.op_type, 0)] if n.input else None
    dtype = types.get(data) if data else _attr_tensor_type(n)
    if dtype is not None and dtype not in OP_TYPES[n.op_type]:
        bad.append(f"input type {TensorProto.DataType.Name(dtype)} not supported")
    bad += [f"{TensorProto.DataType.Name(t)} output" for t in (types.get(o) for o in n.output if o)
            if t is not None and t not in ONNX_TYPES]
    if n.op_type == "Cast" and _attr(n, "to") not in OP_TYPES["Cast"]:
        bad.append(f"cast to {TensorProto.DataType.Name(_attr(n, 'to'))}")
    if n.op_type == "Resize":
        bad += [f"{k}={_attr(n, k)!r}" for k, ok in RESIZE.items() if _attr(n, k) is not None and _attr(n, k) not in ok]
    if n.op_type == "Constant":
        bad += [f"attribute {a.name}" for a in n.attribute if a.name in ("sparse_value", "value_string",
                                                                         "value_strings")]
    bad += [f"input {i} ({n.input[i]}) must be an initializer" for i in CONSTANT_INPUTS.get(n.op_type, ())
            if i < len(n.input) and n.input[i] and n.input[i] not in constants]
    if n.op_type in ("LayerNormalization", "MaxPool") and any(o in used for o in n.output[1:] if o):
        bad.append("only the first output is supported")
    if n.op_type == "TopK" and (_attr(n, "sorted") == 0 or n.input[1] not in constants):
        bad.append("TopK needs sorted=1 and a constant K")
    return bad


def _attr_tensor_type(n: onnx.NodeProto) -> int | None:
    """The type of a Constant's / ConstantOfShape's value attribute."""
    value = _attr(n, "value")
    return value.data_type if isinstance(value, onnx.TensorProto) else None


def static_shape_violations(path: Path, work: Path) -> list[str]:
    """Tensors whose shape is not known at build time once shape arithmetic is constant-folded, as TensorRT does.

    Folded with ONNX Runtime's basic (EP-independent) passes, then every tensor's shape inferred strictly. Also
    checks the 2D/3D-only rule of convolutions and pools, which needs the shapes.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(work / f"{path.stem}.folded.onnx")
    weights = work / f"{path.stem}.folded.weights"  # raw bytes beside the graph: no 1.3 GB protobuf to write
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", weights.name)
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    folded = onnx.load(so.optimized_model_filepath, load_external_data=False)  # shapes need no weight values
    folded = onnx.shape_inference.infer_shapes(folded, strict_mode=True)
    g = folded.graph
    shapes = {vi.name: vi.type.tensor_type.shape for vi in [*g.input, *g.output, *g.value_info]}
    shapes.update({t.name: onnx.TensorShapeProto(dim=[onnx.TensorShapeProto.Dimension(dim_value=d)
                                                      for d in t.dims]) for t in g.initializer})
    bad = []
    for n in g.node:
        for o in (o for o in n.output if o):
            s = shapes.get(o)
            if s is None or any(not d.HasField("dim_value") for d in s.dim):
                bad.append(f"{n.name} ({n.op_type}) -> {o}: shape not static")
        if n.op_type in SPATIAL_RANK and len(shapes[n.input[0]].dim) not in SPATIAL_RANK[n.op_type]:
            bad.append(f"{n.name} ({n.op_type}): only 2D or 3D is supported")
        if n.op_type == "Resize" and _attr(n, "mode") == b"cubic":
            dims_in, dims_out = ([d.dim_value for d in shapes[t].dim] for t in (n.input[0], n.output[0]))
            if dims_in[:-2] != dims_out[:-2]:
                bad.append(f"{n.name} (Resize): cubic resizes {dims_in} -> {dims_out}, not the last 2 dims only")
    Path(so.optimized_model_filepath).unlink()
    weights.unlink(missing_ok=True)
    return bad


@pytest.mark.parametrize("variant,conditioned,precision", GRAPHS,
                         ids=[f"{v}-{'cond' if c else 'plain'}-{p}" for v, c, p in GRAPHS])
def test_exported_graph_uses_only_what_tensorrt_10_3_parses(exported, tmp_path, variant, conditioned, precision):
    path = exported(variant, conditioned, precision)
    model = onnx.load(str(path))
    violations = tensorrt_103_violations(model) + static_shape_violations(path, tmp_path)
    assert not violations, f"{path.name} breaks {DOC}:\n" + "\n".join(violations[:40])
    ops = {n.op_type for n in model.graph.node}
    if variant == "da3-small":  # the checks saw what they guard: K is assembled with ScatterND (both precisions)
        assert "ScatterND" in ops
    if conditioned:  # the pose encoder's quaternion (upstream: boolean indexing -> NonZero) is in the graph
        assert {"Where", "GreaterOrEqual"} <= ops


def test_the_checker_rejects_what_tensorrt_10_3_rejects():
    """The walk is not vacuous: each construct issue 17 found, built into a small graph, is reported."""
    from onnx import helper

    x = helper.make_tensor_value_info("x", F, [2, 3])
    y = helper.make_tensor_value_info("y", F, [2, 3])
    idx = onnx.numpy_helper.from_array(np.array([[0, 1]], np.int64), "idx")
    upd = onnx.numpy_helper.from_array(np.array([5.0], np.float32), "upd")

    def model(*nodes, inits=(), out=y):
        graph = helper.make_graph(list(nodes), "g", [x], [out], initializer=[idx, upd, *inits])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    scatter = helper.make_node("ScatterND", ["x", "idx", "upd"], ["y"], name="s", reduction="none")
    assert any("reduction" in v for v in tensorrt_103_violations(model(scatter)))
    nonzero = [helper.make_node("NonZero", ["x"], ["nz"], name="nz"),
               helper.make_node("Cast", ["nz"], ["y"], name="c", to=F)]
    out_dyn = helper.make_tensor_value_info("y", F, None)
    assert any("depends on the data" in v for v in tensorrt_103_violations(model(*nonzero, out=out_dyn)))
    double = [helper.make_node("Cast", ["x"], ["d"], name="c", to=TensorProto.DOUBLE),
              helper.make_node("Cast", ["d"], ["y"], name="c2", to=F)]
    assert any("DOUBLE" in v for v in tensorrt_103_violations(model(*double)))
    square = onnx.numpy_helper.from_array(np.eye(3, dtype=np.float32), "square")
    det = helper.make_node("Det", ["square"], ["y"], name="det")  # no Det in TensorRT
    assert any("not supported" in v for v in tensorrt_103_violations(model(det, inits=[square], out=out_dyn)))
    assert tensorrt_103_violations(model(helper.make_node("ScatterND", ["x", "idx", "upd"], ["y"], name="s"))) == []


def test_fp16_conversion_drops_the_default_scatter_reduction_only(tmp_path):
    """ONNX Runtime's folding writes reduction="none" on ScatterND; the fp16 graph must not carry it (same output)."""
    import onnxruntime as ort
    from onnx import helper

    x = helper.make_tensor_value_info("x", F, [2, 3])
    y = helper.make_tensor_value_info("y", F, [2, 3])
    idx = onnx.numpy_helper.from_array(np.array([[0, 1], [1, 2]], np.int64), "idx")
    upd = onnx.numpy_helper.from_array(np.array([5.0, -7.0], np.float32), "upd")
    nodes = [helper.make_node("MatMul", ["x", "eye"], ["m"], name="mm"),
             helper.make_node("ScatterND", ["m", "idx", "upd"], ["y"], name="s", reduction="none")]
    eye = onnx.numpy_helper.from_array(np.eye(3, dtype=np.float32), "eye")
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[idx, upd, eye])
    src = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    ref = ort.InferenceSession(src.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    half = to_mixed_fp16(src)
    scatter = [n for n in half.graph.node if n.op_type == "ScatterND"]
    assert len(scatter) == 1 and not any(a.name == "reduction" for a in scatter[0].attribute)
    assert tensorrt_103_violations(half) == []
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_array_equal(got, ref)  # small integers: exact in fp16 too

    adding = onnx.ModelProto()
    adding.CopyFrom(src)
    adding.graph.node[1].attribute[0].s = b"add"  # a real reduction is kept (TensorRT 10.9+ only)
    assert strip_default_scatter_reduction(adding) == 0
    assert onnx.helper.get_attribute_value(adding.graph.node[1].attribute[0]) == b"add"
