"""An on-disk cache of built artifacts (.onnx graphs, TensorRT plans) that never loads what it did not write.

Every artifact is stored beside a JSON sidecar holding its SHA-256 and the key it was built for. A file whose
bytes no longer match its sidecar (truncated, corrupted, swapped) is deleted and reported as missing, so the
caller rebuilds it instead of loading it: a TensorRT plan is executable code and must never come from
anywhere else. Processes and threads sharing a cache take one lock per artifact (``ArtifactCache.lock``, a
``<artifact>.lock`` file beside it, never deleted) around check, build, write and seal, so a reader never
takes a graph that a writer renamed into place but has not sealed yet for a corrupted one. ROS-free and
torch-free.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_LOG = logging.getLogger(__name__)
SIDECAR_SUFFIX = ".meta.json"
LOCK_SUFFIX = ".lock"


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

    @contextmanager
    def lock(self, path: Path) -> Iterator[None]:
        """Hold the artifact's lock: exclusive between processes (flock) and threads, re-entrant in one thread.

        Hold it from the check that finds an artifact missing until it is sealed: a second process (or the
        background fallback export) wanting the same artifact then waits and finds it made.
        """
        lk = _path_lock(path.with_name(path.name + LOCK_SUFFIX))
        with lk.rlock:
            if lk.depth == 0:
                lk.acquire()
            lk.depth += 1
            try:
                yield
            finally:
                lk.depth -= 1
                if lk.depth == 0:
                    lk.release()

    def store(self, path: Path, data: bytes, key: dict[str, Any]) -> Path:
        """Write ``data`` and its sidecar atomically (a crash leaves no half-written artifact)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock(path):
            _atomic_write(path, data)
            meta = {"sha256": sha256_bytes(data), "size": len(data), "key": key}
            _atomic_write(_sidecar(path), json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
        return path

    def seal(self, path: Path, key: dict[str, Any]) -> Path:
        """Write the sidecar for an artifact that a tool wrote to ``path`` directly.

        A weights file ``<path>.data`` beside it (a graph too large for one file) is hashed into it too. The
        writer holds ``lock(path)`` from before it renames the artifact into place until this returns.
        """
        with self.lock(path):
            meta: dict[str, Any] = {"sha256": sha256_file(path), "size": path.stat().st_size, "key": key}
            if data_file(path).is_file():
                meta["data_sha256"] = sha256_file(data_file(path))
            _atomic_write(_sidecar(path), json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
        return path

    def verified(self, path: Path) -> bool:
        """True when ``path`` exists and matches its sidecar; a mismatching artifact is deleted.

        Under the artifact's lock: one that a writer has renamed into place but not sealed is waited for.
        """
        side = _sidecar(path)
        if not path.is_file() and not side.is_file():
            return False
        with self.lock(path):
            return self._verified_locked(path, side)

    def _verified_locked(self, path: Path, side: Path) -> bool:
        if not path.is_file() and not side.is_file():  # discarded by whoever held the lock before us
            return False
        try:
            meta = json.loads(side.read_text())
            ok = path.stat().st_size == meta["size"] and sha256_file(path) == meta["sha256"]
            if ok and "data_sha256" in meta:
                ok = sha256_file(data_file(path)) == meta["data_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            _LOG.warning("cached artifact %s is missing, corrupted or unsealed: deleting it to rebuild", path)
            self.discard(path)
        return ok

    def load_verified(self, path: Path) -> bytes | None:
        """The artifact's bytes if they match the sidecar, else None (and the bad files are deleted)."""
        with self.lock(path):
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
        for p in (path, _sidecar(path), data_file(path)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


class _PathLock:
    """One lock file: a thread lock in this process, and flock on the file between processes while held."""

    def __init__(self, file: Path):
        self.file = file
        self.rlock = threading.RLock()  # flock is per open file: threads of one process need their own lock
        self.depth = 0  # re-entrant holds by the owning thread
        self.fd: int | None = None

    def acquire(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process is building this artifact: wait for it, and say so
                _LOG.info("waiting for another process writing %s", self.file.with_suffix(""))
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the file releases the flock
            self.fd = None


_PATH_LOCKS: dict[Path, _PathLock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(file: Path) -> _PathLock:
    key = file.absolute()
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(key, _PathLock(key))


def data_file(graph: Path) -> Path:
    """The weights file beside ``graph`` (``<graph>.data``): the name a graph too large for one file refers to."""
    return graph.with_name(graph.name + ".data")


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
