"""A standard Triton model repository for one rig, from a graph ``da3-ros export`` wrote.

Layout (Triton's model repository format)::

    <repo>/<name>/config.pbtxt           backend "onnxruntime", max_batch_size 0, exact input/output dims
    <repo>/<name>/1/model.onnx           the graph (+ its .onnx.data weights file when over 2 GB)
    <repo>/<name>_trt/config.pbtxt       platform "tensorrt_plan" (only when TensorRT is installed here:
    <repo>/<name>_trt/1/model.plan        a plan is tied to the GPU and TensorRT version that built it)
    <repo>/<name>_openvino/config.pbtxt  backend "openvino" on CPU instances (``--openvino``: Triton's OpenVINO
    <repo>/<name>_openvino/1/model.xml   backend, for inference servers without a GPU), the fp32 graph as
    <repo>/<name>_openvino/1/model.bin   OpenVINO IR converted by OpenVINO here (model.onnx where it is not
                                          installed: the backend reads ONNX too)

The config carries the graph's da3_ros metadata (variant, views, size) as a parameter, which the ``triton``
backend reads to check that the server runs the model the robot expects. Torch-free.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from da3_ros.engines.cache import data_file
from da3_ros.engines.onnx_source import META_KEY, read_metadata

TENSORRT_ACCELERATOR = """optimization {
  execution_accelerators {
    gpu_execution_accelerator: [ { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ]
  }
}
"""


def _io_dims(path: Path) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def dims(values) -> list[tuple[str, list[int]]]:
        return [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

    return dims(graph.input), dims(graph.output)


def model_config(name: str, platform: str, inputs, outputs, meta: dict, tensorrt_accelerator: bool = False,
                 model_filename: str = "") -> str:
    """config.pbtxt text: fixed dims, no batching (the graph holds one rig set), the metadata as a parameter.

    ``model_filename``: the file in the version folder when it is not the backend's default name; the OpenVINO
    backend runs on CPU instances (it does not complete a config, so everything is written out).
    """
    kind = f'platform: "{platform}"' if platform == "tensorrt_plan" else f'backend: "{platform}"'
    if model_filename:
        kind += f'\ndefault_model_filename: "{model_filename}"'
    if platform == "openvino":
        kind += "\ninstance_group [ { kind: KIND_CPU } ]"

    def block(key: str, items) -> str:
        rows = [f'  {{ name: "{n}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, d))} ] }}' for n, d in items]
        return f"{key} [\n" + ",\n".join(rows) + "\n]\n"

    text = f'name: "{name}"\n{kind}\nmax_batch_size: 0\n' + block("input", inputs) + block("output", outputs)
    text += f'parameters {{ key: "{META_KEY}" value: {{ string_value: {json.dumps(json.dumps(meta))} }} }}\n'
    return text + (TENSORRT_ACCELERATOR if tensorrt_accelerator else "")


def write_repository(onnx_path: Path, repo: Path, name: str, tensorrt_accelerator: bool = False,
                     plan: bytes | None = None) -> list[Path]:
    """Write the model(s) for ``onnx_path`` into ``repo``; return the model directories written."""
    meta = read_metadata(onnx_path)
    if meta.get("precision") != "fp32":
        raise ValueError(f"{onnx_path} is a {meta.get('precision')} graph; the repository takes the fp32 export "
                         "(TensorRT makes its own fp16 plan)")
    inputs, outputs = _io_dims(onnx_path)
    model_dir = repo / name
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, version / "model.onnx")
    data = data_file(onnx_path)
    if data.is_file():  # the graph names its weights file: keep that name beside it
        shutil.copyfile(data, version / data.name)
    (model_dir / "config.pbtxt").write_text(model_config(name, "onnxruntime", inputs, outputs, meta,
                                                         tensorrt_accelerator))
    written = [model_dir]
    if plan is not None:
        trt_dir = repo / f"{name}_trt"
        (trt_dir / "1").mkdir(parents=True, exist_ok=True)
        (trt_dir / "1" / "model.plan").write_bytes(plan)
        (trt_dir / "config.pbtxt").write_text(model_config(f"{name}_trt", "tensorrt_plan", inputs, outputs, meta))
        written.append(trt_dir)
    return written


def write_openvino_model(onnx_path: Path, repo: Path, name: str) -> Path:
    """``<repo>/<name>_openvino``: the fp32 graph for Triton's OpenVINO backend (CPU servers); its directory.

    OpenVINO IR (model.xml + model.bin, weights kept fp32: the server's CPU plugin picks bf16 itself where the
    CPU has it) when ``openvino`` is installed here, else the ONNX graph, which that backend also reads.
    """
    meta = read_metadata(onnx_path)
    if meta.get("precision") != "fp32":
        raise ValueError(f"{onnx_path} is a {meta.get('precision')} graph; the repository takes the fp32 export")
    inputs, outputs = _io_dims(onnx_path)
    model_dir = repo / f"{name}_openvino"
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    try:
        import openvino as ov
    except ImportError:
        filename = "model.onnx"
        shutil.copyfile(onnx_path, version / filename)
        data = data_file(onnx_path)
        if data.is_file():
            shutil.copyfile(data, version / data.name)
    else:
        filename = "model.xml"
        ov.save_model(ov.convert_model(str(onnx_path)), str(version / filename), compress_to_fp16=False)
    (model_dir / "config.pbtxt").write_text(model_config(f"{name}_openvino", "openvino", inputs, outputs, meta,
                                                         model_filename=filename))
    return model_dir
