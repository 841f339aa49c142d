"""A TensorRT stand-in for machines without TensorRT or a GPU: only TensorRT's own calls are replaced.

``StandInRunner`` is the real ``TensorRTRunner`` (plan cache, pending plans, the parity gate, its reference)
with TensorRT's four calls stood in: ``_build`` records the build and returns the graph's path as the "plan",
``_deserialize`` reads it back, ``_bind`` opens the graph on ONNX Runtime (or fails like a context without GPU
memory, through the real ``create_context``), and ``run`` returns that graph's outputs with depth multiplied by
``depth_scale`` — 1.5 is what TensorRT 10.3's depth-scale bug looks like to the gate. ``install`` patches the
module the way test_tensorrt.py does (``tensorrt_status``: TensorRT 10.3 "starts"), not the machine.
"""
from __future__ import annotations

from pathlib import Path

from da3_ros.engines import tensorrt_engine as trt_engine

JETPACK6_TRT = "10.3.0.30"


class _NoMemoryEngine:
    """What a deserialized engine does when its activations do not fit: create_execution_context() is None."""

    device_memory_size_v2 = 3 << 30

    def create_execution_context(self):
        return None


class StandInRunner(trt_engine.TensorRTRunner):
    """The real runner with TensorRT's build / deserialise / bind / execute stood in (see the module)."""

    depth_scale = 1.5  # 1.5: refused by the gate (JetPack 6's bug); 1.0: passes
    oom = False  # True: the execution context cannot be created (GPU memory)
    builds: list[Path] = []
    references: list = []  # the reference each runner was given

    def __init__(self, onnx_path, cache, n_views, hw, precision, reference=None, *args, **kwargs):
        StandInRunner.references.append(reference)
        super().__init__(onnx_path, cache, n_views, hw, precision, reference, *args, **kwargs)

    def _build(self, onnx_path, workspace_gib, precision):
        StandInRunner.builds.append(Path(onnx_path))
        return str(onnx_path).encode()

    def _deserialize(self, plan):
        return Path(plan.decode())

    def _bind(self, engine, n_views, hw):
        from da3_ros.engines.onnxruntime_engine import OrtRunner

        if self.oom:
            trt_engine.create_context(_NoMemoryEngine(), f"the {n_views}-view {hw[1]}x{hw[0]} engine")
        self._ort = OrtRunner(engine, providers=["CPUExecutionProvider"])
        self.input_names, self.output_names = self._ort.input_names, self._ort.output_names
        self.input_shapes = {i.name: tuple(i.shape) for i in self._ort.session.get_inputs()}

    def run(self, feeds):
        out = dict(self._ort.run(feeds))
        out["depth"] = out["depth"] * self.depth_scale
        return out


def install(monkeypatch, depth_scale: float = 1.5, oom: bool = False) -> type[StandInRunner]:
    """Make TensorRT 10.3 "start" here with the stand-in runner; a fresh process's memory of refusals."""
    import da3_ros.engines as engines

    monkeypatch.setattr(trt_engine, "tensorrt_status", lambda: (True, JETPACK6_TRT))
    monkeypatch.setattr(trt_engine, "_gpu_identity", lambda: "Orin (sm_87)")
    monkeypatch.setattr(trt_engine, "TensorRTRunner", StandInRunner)
    monkeypatch.setattr(trt_engine, "_REFUSED", {})
    monkeypatch.setattr(engines.settings, "_SAID", set())
    monkeypatch.setattr(StandInRunner, "depth_scale", depth_scale)
    monkeypatch.setattr(StandInRunner, "oom", oom)
    monkeypatch.setattr(StandInRunner, "builds", [])
    monkeypatch.setattr(StandInRunner, "references", [])
    return StandInRunner
