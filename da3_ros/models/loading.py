"""Load a DA3 network from a Hugging Face repo id, a local directory, or seeded random weights.

Weights come only from safetensors, and keys are checked strictly: upstream's ``from_pretrained`` loads with
``strict=False``, so a checkpoint with the wrong keys silently runs on random weights. Here it fails loudly.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from da3_ros.models.registry import VARIANTS, Variant, get_variant

if TYPE_CHECKING:  # torch is imported where a network is built, so that torch-free backends never load it
    import torch

_LOG = logging.getLogger(__name__)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
RANDOM_PREFIX = "random:"
# Upstream checkpoints hold the network under this attribute of their DepthAnything3 wrapper.
_KEY_PREFIX_ATTR = "model"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: missing files, bad keys, bad shapes, or a damaged file."""


@dataclass
class LoadedModel:
    """A DA3 network ready for inference, with where its weights came from."""

    net: torch.nn.Module
    variant: Variant
    source: str  # the spec it was loaded from
    trained: bool  # False for random:<variant> weights

    @property
    def label(self) -> str:
        """Human-readable name; untrained weights are always called out."""
        return self.source if self.trained else f"{self.source} (UNTRAINED random weights)"


def build_network(variant: str | Variant, seed: int = 0) -> torch.nn.Module:
    """Build the upstream DA3 architecture with seeded random weights, in eval mode."""
    import torch
    from depth_anything_3.cfg import create_object, load_config  # heavy: import on use
    from depth_anything_3.registry import MODEL_REGISTRY

    name = variant.name if isinstance(variant, Variant) else get_variant(variant).name
    torch.manual_seed(seed)
    net = create_object(load_config(MODEL_REGISTRY[name]))
    return net.eval().requires_grad_(False)


def load_model(spec: str, device: str | torch.device = "cpu", variant: str | None = None) -> LoadedModel:
    """Load ``spec``: ``random:<variant>[@seed]``, a local directory, a variant name or a Hugging Face repo id.

    A directory must hold ``model.safetensors`` and a ``config.json`` naming ``model_name`` (upstream's layout),
    or ``variant`` must be given. Hub downloads honour ``HF_HUB_OFFLINE=1`` (then only the local cache is used).
    """
    if spec.startswith(RANDOM_PREFIX):
        name, _, seed = spec[len(RANDOM_PREFIX):].partition("@")
        v = get_variant(name)
        _LOG.warning("model %s: UNTRAINED random weights (seed %s) - outputs are meaningless", v.name, seed or 0)
        net = build_network(v, int(seed or 0))
        return LoadedModel(net.to(device), v, spec, trained=False)
    if spec in VARIANTS:  # a bare variant name means its official repository
        spec = VARIANTS[spec].hf_repo
    path = Path(spec).expanduser()
    directory = path if path.is_dir() else download(spec)
    v = get_variant(variant) if variant else variant_from_config(directory)
    net = build_network(v)
    load_weights(net, directory / WEIGHTS_NAME)
    return LoadedModel(net.to(device), v, spec, trained=True)


def load_weights(net: torch.nn.Module, weights_path: str | os.PathLike) -> None:
    """Load upstream-layout safetensors weights (keys ``model.<param>``) into ``net``, strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as st_load_model

    weights_path = Path(weights_path)
    if not weights_path.is_file():
        hint = " (pickle checkpoints are not loaded, convert to safetensors)" if any(
            weights_path.parent.glob("*.bin")) or any(weights_path.parent.glob("*.pt*")) else ""
        raise CheckpointError(f"no {WEIGHTS_NAME} in {weights_path.parent}{hint}")
    import torch

    holder = torch.nn.Module()  # gives the keys upstream's prefix without touching the net
    setattr(holder, _KEY_PREFIX_ATTR, net)
    try:
        # safetensors' loader knows which tensors were deduplicated on save (shared LayerNorms).
        missing, unexpected = st_load_model(holder, str(weights_path), strict=False)
    except SafetensorError as exc:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file (truncated?): {exc}") from exc
    except RuntimeError as exc:  # shape mismatches from load_state_dict
        raise CheckpointError(f"{weights_path} does not fit the architecture: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path} does not match the architecture: {len(missing)} missing keys "
            f"{_preview(missing)}, {len(unexpected)} unexpected keys {_preview(unexpected)}"
        )


def _preview(keys: list[str], n: int = 5) -> str:
    head = ", ".join(sorted(keys)[:n])
    return f"[{head}{', ...' if len(keys) > n else ''}]"


def variant_from_config(directory: Path) -> Variant:
    """The variant named by ``config.json`` in a checkpoint directory."""
    config = directory / CONFIG_NAME
    try:
        name = json.loads(config.read_text())["model_name"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"cannot tell the variant from {config} ({exc}); pass the variant explicitly") from exc
    return get_variant(name)


def download(repo_id: str, files: list[str] | None = None) -> Path:
    """Fetch (or find in the local cache) a checkpoint's files from the Hugging Face Hub; its directory."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=files or [CONFIG_NAME, WEIGHTS_NAME]))
    except HFValidationError as exc:
        raise CheckpointError(f"{repo_id!r} is neither a local directory nor a Hugging Face repo id") from exc
    except Exception as exc:  # offline, not found, auth: all mean "no weights here"
        raise CheckpointError(
            f"cannot fetch {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}); with "
            "HF_HUB_OFFLINE=1 only cached repos load - or pass a local directory") from exc
