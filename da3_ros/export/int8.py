"""int8 ONNX for ONNX Runtime on CPU: the linear layers' weights int8, their activations quantized at run time.

ONNX Runtime's dynamic quantization (``onnxruntime.quantization.quantize_dynamic``) applied to the exported
fp32 graph: every MatMul whose second input is a weight becomes DynamicQuantizeLinear + MatMulInteger (fused
by ONNX Runtime's extended optimisations into DynamicQuantizeMatMul / MatMulIntegerToFloat), with weights int8
(signed: the u8 x s8 kernels use AVX512-VNNI / AMX) per output channel, activations uint8 with a scale found
per tensor on every run. No calibration data is needed, so the graph is exact to reproduce from the weights.
On x86 CPUs without VNNI the weights use 7 bits (``reduce_range``: AVX2's kernels would saturate with 8; see
``engines.cpu_features``); the graph cache keys on the bits, so each machine gets the graph made for it.

What stays fp32, and why (measured on da3-small, 504x280, 2 threads, see BENCHMARKS.md):
- Conv (the patch embedding and the DPT head): ONNX Runtime's ConvInteger is slower than its fp32 Conv here
  (1.25x the fp32 forward with the convolutions quantized against 0.64x without).
- attention's activation x activation MatMuls (``MatMulConstBOnly``): queries, keys and the softmax would
  each be quantized per tensor on the fly, the largest accuracy cost for the least speed.
- Gemm (the camera decoder's small MLP): dynamic quantization has no Gemm kernel, and it is tiny.
ONNX-Runtime-only: DynamicQuantizeMatMul is a CPU contrib op (TensorRT needs calibrated QDQ graphs instead).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

INT8_OPS = ("MatMul",)  # see the module docstring for what stays fp32


def to_dynamic_int8(model, work_dir: Path):
    """Return ``model`` (an onnx ModelProto, fp32) with its weight MatMuls dynamically quantized to int8.

    ``work_dir``: where the quantizer's scratch files go (it works on files); nothing is left there.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from da3_ros.engines.cpu_features import int8_weight_bits

    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".int8-") as scratch:
        src, dst = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(INT8_OPS), per_channel=True,
                         weight_type=QuantType.QInt8, reduce_range=int8_weight_bits() == 7,
                         extra_options={"MatMulConstBOnly": True})
        quantized = onnx.load(str(dst))
    if not any(n.op_type == "MatMulInteger" for n in quantized.graph.node):
        raise ValueError("int8 quantization found no weight MatMul to quantize in this graph")
    return quantized
