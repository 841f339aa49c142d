"""Inference engines: one interface (``Engine.infer``), one backend per runtime."""
from da3_ros.engines.base import Engine, FrameBatch
from da3_ros.engines.torch_engine import TorchEngine

__all__ = ["Engine", "FrameBatch", "TorchEngine", "create_engine"]


def create_engine(backend: str, model, **kwargs) -> Engine:
    """Build the engine for ``backend`` ("torch") around a LoadedModel."""
    if backend == "torch":
        return TorchEngine(model, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; available: torch")
