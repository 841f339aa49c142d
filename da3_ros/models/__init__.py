"""DA3 variants and checkpoint loading (torch is imported only when a network is built)."""
from da3_ros.models.loading import CheckpointError, LoadedModel, load_model
from da3_ros.models.registry import VARIANTS, Variant, get_variant

__all__ = ["CheckpointError", "LoadedModel", "load_model", "VARIANTS", "Variant", "get_variant"]
