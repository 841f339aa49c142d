"""The DA3 variants da3_ros knows, with what each one predicts.

Names are upstream's config names (``depth_anything_3/configs/<name>.yaml``); ``hf_repo`` is the official
Hugging Face repository holding ``config.json`` + ``model.safetensors`` for that variant.
"""
from __future__ import annotations

from dataclasses import dataclass

from da3_ros.core.engine_api import DepthKind  # noqa: F401 (re-exported: the variants' kinds)
from da3_ros.core.errors import ConfigError


@dataclass(frozen=True)
class Variant:
    """One DA3 architecture."""

    name: str
    hf_repo: str
    depth_kind: DepthKind
    has_pose: bool  # camera decoder: predicts extrinsics + intrinsics, accepts pose conditioning
    has_sky: bool  # predicts a sky probability map
    params_m: float  # parameters, millions (for the docs and memory planning)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("da3-small", "depth-anything/DA3-SMALL", DepthKind.RELATIVE, True, False, 34.3),
        Variant("da3-base", "depth-anything/DA3-BASE", DepthKind.RELATIVE, True, False, 135.0),
        Variant("da3-large", "depth-anything/DA3-LARGE", DepthKind.RELATIVE, True, False, 411.0),
        Variant("da3-giant", "depth-anything/DA3-GIANT", DepthKind.RELATIVE, True, False, 1360.0),
        Variant("da3mono-large", "depth-anything/DA3MONO-LARGE", DepthKind.RELATIVE, False, True, 334.0),
        Variant("da3metric-large", "depth-anything/DA3METRIC-LARGE", DepthKind.METRIC_FOCAL, False, True, 334.0),
        Variant(
            "da3nested-giant-large", "depth-anything/DA3NESTED-GIANT-LARGE", DepthKind.METRIC, True, False, 1690.0
        ),
    )
}

# DA3METRIC's output is depth at a canonical focal length of this many pixels.
METRIC_CANONICAL_FOCAL_PX = 300.0


def get_variant(name: str) -> Variant:
    """Return the variant called ``name`` or raise a ValueError listing the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(f"unknown DA3 variant {name!r}; known: {', '.join(VARIANTS)}") from None
