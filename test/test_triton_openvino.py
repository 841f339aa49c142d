"""``da3-ros export --triton-repo --openvino`` (issue 26): a model for Triton's OpenVINO backend (CPU servers).

Triton's own config schema (tritonclient's ``model_config_pb2``) parses the config; the IR that OpenVINO
wrote is read back by OpenVINO and computes what ONNX Runtime computes on the repository's ONNX model for the
same input (both fp32). Triton's OpenVINO backend itself is not installable here (the bundled tritonserver has
the Python backend only): what it reads is checked by its schema and by the runtime it wraps.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

HW = (56, 70)


def _export(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "da3_ros.offline.cli", "export", "--model", "random:da3-small@0",
                           "--views", "2", "--height", str(HW[0]), "--width", str(HW[1]), *extra],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_the_openvino_model_is_what_triton_s_openvino_backend_reads(tmp_path):
    import onnxruntime as ort
    import openvino as ov

    repo = tmp_path / "repo"
    done = _export(tmp_path, "--triton-repo", str(repo), "--openvino")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote Triton model da3_openvino" in done.stdout
    config = text_format.Parse((repo / "da3_openvino" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "openvino" and config.default_model_filename == "model.xml"
    assert config.max_batch_size == 0 and [g.kind for g in config.instance_group] == [
        model_config_pb2.ModelInstanceGroup.KIND_CPU]
    onnx_config = text_format.Parse((repo / "da3" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert [(t.name, list(t.dims)) for t in [*config.input, *config.output]] == \
        [(t.name, list(t.dims)) for t in [*onnx_config.input, *onnx_config.output]]
    meta = json.loads(config.parameters["da3_ros"].string_value)  # what the node's triton backend checks
    assert meta["variant"] == "da3-small" and meta["n_views"] == 2 and meta["precision"] == "fp32"

    images = np.random.default_rng(0).random((1, 2, 3, *HW), dtype=np.float32)
    compiled = ov.Core().compile_model(str(repo / "da3_openvino" / "1" / "model.xml"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(images)
    session = ort.InferenceSession(str(repo / "da3" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    want = dict(zip(names, session.run(None, {"images": images})))
    for out in compiled.outputs:
        name = out.get_any_name()
        np.testing.assert_allclose(got[out], want[name], rtol=1e-3, atol=1e-4, err_msg=name)


def test_openvino_without_a_repository_is_refused_with_the_fix(tmp_path):
    done = _export(tmp_path, "--openvino")
    assert done.returncode != 0 and "give --triton-repo DIR too" in done.stderr and "Traceback" not in done.stderr
