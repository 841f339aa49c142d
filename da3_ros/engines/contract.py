"""The core <-> engines contract, as types: every engine class is a ``core.engine_api.DepthEngine``.

Nothing here runs (the imports are for the type checker only): the strict mypy run of test/test_lint.py checks
each assignment below, so an engine that stops satisfying the protocol the core declares (an attribute's type,
a missing or changed method) fails the suite. ``ENGINE_CLASSES`` names the classes checked here; test_lint
asserts it lists every ``Engine`` subclass of the package, so a new backend cannot skip the check.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

ENGINE_CLASSES = ("Engine", "FixedShapeEngine", "MetricPairEngine", "OnnxRuntimeEngine", "OpenVinoEngine",
                  "TensorRTEngine", "TorchEngine", "TritonEngine")

if TYPE_CHECKING:
    from da3_ros.core.engine_api import DepthEngine
    from da3_ros.engines.base import Engine
    from da3_ros.engines.fixed_shape import FixedShapeEngine
    from da3_ros.engines.metric_pair import MetricPairEngine
    from da3_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
    from da3_ros.engines.openvino_engine import OpenVinoEngine
    from da3_ros.engines.tensorrt_engine import TensorRTEngine
    from da3_ros.engines.torch_engine import TorchEngine
    from da3_ros.engines.triton_engine import TritonEngine

    _engine: DepthEngine = cast(Engine, None)
    _fixed_shape: DepthEngine = cast(FixedShapeEngine, None)
    _metric_pair: DepthEngine = cast(MetricPairEngine, None)
    _onnxruntime: DepthEngine = cast(OnnxRuntimeEngine, None)
    _openvino: DepthEngine = cast(OpenVinoEngine, None)
    _tensorrt: DepthEngine = cast(TensorRTEngine, None)
    _torch: DepthEngine = cast(TorchEngine, None)
    _triton: DepthEngine = cast(TritonEngine, None)
