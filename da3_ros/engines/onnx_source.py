"""Where a graph backend's ONNX files come from: a given .onnx file, or the cache, exported on demand.

``model`` is what the node's ``model`` parameter holds: a ``.onnx`` file exported by ``da3-ros export`` (used as
is; its metadata must match the rig), or a checkpoint spec (``random:<variant>``, a local directory, a variant
name, a Hugging Face id). For a spec, the graph for each (N views, network size, conditioning, precision) is
looked up in the artifact cache and, when missing or corrupted, exported in a separate process
(``python -m da3_ros.engines.export``) so that torch never enters the calling process. Without torch the
error names the ``da3-ros export`` command to run where torch is. Torch-free.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from da3_ros.engines.base import BackendUnavailable
from da3_ros.engines.cache import ArtifactCache
from da3_ros.models import loading
from da3_ros.models.registry import VARIANTS, Variant, get_variant

_LOG = logging.getLogger(__name__)
GRAPH_VERSION = 2  # 2: no NonZero (mat_to_quat), no default ScatterND reduction; old cached graphs are re-exported
META_KEY = "da3_ros"


class GraphMismatch(ValueError):
    """A given .onnx file was exported for another rig (views, size or conditioning)."""


def read_metadata(path: Path) -> dict:
    """The da3_ros metadata of an exported graph (ValueError for a file da3_ros did not export)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise ValueError(f"{path} was not exported by da3_ros (no '{META_KEY}' metadata); use `da3-ros export`")
    return json.loads(props[META_KEY])


def export_command(model: str, n_views: int, hw: tuple[int, int], conditioned: bool, precision: str,
                   out: str | Path) -> list[str]:
    """The ``da3-ros export`` command line that writes the graph for this rig."""
    cmd = ["da3-ros", "export", "--model", model, "--views", str(n_views), "--height", str(hw[0]),
           "--width", str(hw[1]), "--precision", precision, "--out", str(out)]
    return cmd + (["--conditioned"] if conditioned else [])


class OnnxSource:
    """The variant, label and ONNX graphs of one model, for fixed-shape backends."""

    def __init__(self, model: str, cache: ArtifactCache):
        self.model = model
        self.cache = cache
        self.file = Path(model).expanduser() if model.endswith(".onnx") else None
        if self.file is not None:
            if not self.file.is_file():
                raise FileNotFoundError(f"ONNX file {self.file} does not exist; write one with `da3-ros export`")
            self.meta = read_metadata(self.file)
            self.variant = get_variant(self.meta["variant"])
            self.label, self.trained = self.meta.get("label") or str(self.file), bool(self.meta.get("trained"))
        else:
            self.variant = variant_of(model)
            self.trained = not model.startswith(loading.RANDOM_PREFIX)
            self.label = model if self.trained else f"{model} (UNTRAINED random weights)"

    def key(self, n_views: int, hw: tuple[int, int], conditioned: bool, precision: str) -> dict:
        """Everything an exported graph depends on."""
        return {"model": self.model, "weights": weights_fingerprint(self.model), "n_views": int(n_views),
                "hw": [int(hw[0]), int(hw[1])], "conditioned": bool(conditioned), "precision": precision,
                "graph_version": GRAPH_VERSION}

    def onnx_for(self, n_views: int, hw: tuple[int, int], conditioned: bool, precision: str = "fp32") -> Path:
        """The verified .onnx for this rig shape: the given file, the cached one, or a fresh export."""
        if self.file is not None:
            want = {"n_views": n_views, "height": hw[0], "width": hw[1], "conditioned": conditioned}
            got = {k: self.meta.get(k) for k in want}
            if got != want:
                raise GraphMismatch(
                    f"{self.file} was exported for {got}, this set needs {want}: run "
                    f"`{' '.join(export_command('<checkpoint>', n_views, hw, conditioned, precision, '<file>'))}`")
            return self.file
        key = self.key(n_views, hw, conditioned, precision)
        path = self.cache.path_for("onnx", key, "onnx")
        if self.cache.verified(path):
            return path
        if importlib.util.find_spec("torch") is None:
            raise BackendUnavailable(
                f"no exported graph for {self.model} ({n_views} views, {hw[1]}x{hw[0]}, {precision}) in "
                f"{self.cache.root}, and torch is not installed here to export it. Run, where torch is: "
                f"`{' '.join(export_command(self.model, n_views, hw, conditioned, precision, '<file>.onnx'))}` "
                "and set model to that file")
        self._export(path, n_views, hw, conditioned, precision)
        return self.cache.seal(path, key)

    def _export(self, path: Path, n_views: int, hw: tuple[int, int], conditioned: bool, precision: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Export under the final file name in a scratch directory (a large model's graph names its weights
        # file), then move the weights first and the graph last: a crash leaves no graph without weights.
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
            tmp = Path(scratch) / path.name
            cmd = [sys.executable, "-m", "da3_ros.engines.export", "--model", self.model, "--views", str(n_views),
                   "--height", str(hw[0]), "--width", str(hw[1]), "--precision", precision, "--out", str(tmp)]
            cmd += ["--conditioned"] if conditioned else []
            _LOG.info("exporting %s for %d views at %dx%d (%s) into %s", self.model, n_views, hw[1], hw[0],
                      precision, self.cache.root)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not tmp.is_file():
                tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
                raise RuntimeError(f"export of {self.model} failed (exit {proc.returncode}): {tail}")
            data = tmp.with_name(tmp.name + ".data")
            if data.is_file():
                data.replace(path.with_name(path.name + ".data"))
            tmp.replace(path)


def variant_of(model: str) -> Variant:
    """The variant a checkpoint spec names, found without torch."""
    if model.startswith(loading.RANDOM_PREFIX):
        return get_variant(model[len(loading.RANDOM_PREFIX):].partition("@")[0])
    if model in VARIANTS:
        return VARIANTS[model]
    path = Path(model).expanduser()
    if path.is_dir():
        return loading.variant_from_config(path)
    for v in VARIANTS.values():
        if v.hf_repo == model:
            return v
    return loading.variant_from_config(loading.download(model, files=[loading.CONFIG_NAME]))


def weights_fingerprint(model: str) -> str:
    """Identify the weights behind a spec cheaply.

    The spec for random weights, else the weights file's path, size and modification time (a re-downloaded or
    replaced checkpoint gets a new graph).
    """
    if model.startswith(loading.RANDOM_PREFIX):
        return model
    path = Path(model).expanduser()
    weights = path / loading.WEIGHTS_NAME if path.is_dir() else None
    if weights is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            repo = VARIANTS[model].hf_repo if model in VARIANTS else model
            cached = try_to_load_from_cache(repo, loading.WEIGHTS_NAME)
            weights = Path(cached) if isinstance(cached, str) else None
        except Exception:  # not a repo id, or no hub library: the spec alone identifies it
            weights = None
    if weights is None or not weights.is_file():
        return f"spec:{model}"
    st = weights.resolve().stat()
    return f"{weights.resolve()}:{st.st_size}:{st.st_mtime_ns}"
