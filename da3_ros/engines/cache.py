"""An on-disk cache of built artifacts (.onnx graphs, TensorRT plans) that never loads what it did not write.

Every artifact is stored beside a JSON sidecar holding its SHA-256 and the key it was built for. A file whose
bytes no longer match its sidecar (truncated, corrupted, swapped) is deleted and reported as missing, so the
caller rebuilds it instead of loading it: a TensorRT plan is executable code and must never come from
anywhere else. ROS-free and torch-free.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

_LOG = logging.getLogger(__name__)
SIDECAR_SUFFIX = ".meta.json"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/da3_ros`` (``~/.cache/da3_ros`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "da3_ros"


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def key_digest(key: dict[str, Any]) -> str:
    """Stable hex digest of a JSON-able key (sorted keys): any change of any entry changes it."""
    return sha256_bytes(json.dumps(key, sort_keys=True, default=str).encode())


class ArtifactCache:
    """Artifacts under ``root``, named ``<kind>-<digest of key>.<ext>``, each verified before use."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()

    def path_for(self, kind: str, key: dict[str, Any], ext: str) -> Path:
        """Where the artifact of ``kind`` built for ``key`` lives (it may not exist yet)."""
        return self.root / f"{kind}-{key_digest(key)[:20]}.{ext}"

    def store(self, path: Path, data: bytes, key: dict[str, Any]) -> Path:
        """Write ``data`` and its sidecar atomically (a crash leaves no half-written artifact)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data)
        meta = {"sha256": sha256_bytes(data), "size": len(data), "key": key}
        _atomic_write(_sidecar(path), json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
        return path

    def seal(self, path: Path, key: dict[str, Any]) -> Path:
        """Write the sidecar for an artifact that a tool wrote to ``path`` directly.

        A weights file ``<path>.data`` beside it (a graph too large for one file) is hashed into it too.
        """
        meta: dict[str, Any] = {"sha256": sha256_file(path), "size": path.stat().st_size, "key": key}
        if _data_file(path).is_file():
            meta["data_sha256"] = sha256_file(_data_file(path))
        _atomic_write(_sidecar(path), json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
        return path

    def verified(self, path: Path) -> bool:
        """True when ``path`` exists and matches its sidecar; a mismatching artifact is deleted."""
        side = _sidecar(path)
        if not path.is_file() and not side.is_file():
            return False
        try:
            meta = json.loads(side.read_text())
            ok = path.stat().st_size == meta["size"] and sha256_file(path) == meta["sha256"]
            if ok and "data_sha256" in meta:
                ok = sha256_file(_data_file(path)) == meta["data_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            _LOG.warning("cached artifact %s is missing, corrupted or unsealed: deleting it to rebuild", path)
            self.discard(path)
        return ok

    def load_verified(self, path: Path) -> bytes | None:
        """The artifact's bytes if they match the sidecar, else None (and the bad files are deleted)."""
        if not self.verified(path):
            return None
        data = path.read_bytes()
        if sha256_bytes(data) != json.loads(_sidecar(path).read_text())["sha256"]:  # changed since verified
            self.discard(path)
            return None
        return data

    @staticmethod
    def discard(path: Path) -> None:
        """Remove an artifact and its sidecar, if present."""
        for p in (path, _sidecar(path), _data_file(path)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def _data_file(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
