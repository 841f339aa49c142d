"""Where a graph backend's ONNX files come from: a given .onnx file, or the cache, exported on demand.

``model`` is what the node's ``model`` parameter holds: a ``.onnx`` file exported by ``da3-ros export`` (used as
is; its metadata must match the rig), or a checkpoint spec (``random:<variant>``, a local directory, a variant
name, a Hugging Face id). For a spec, the graph for each (N views, network size, conditioning, precision) is
looked up in the artifact cache and, when missing or corrupted, exported in a separate process
(``python -m da3_ros.export.onnx_export``) so that torch never enters the calling process. Without torch the
error names the ``da3-ros export`` command to run where torch is. Torch-free.

An export never outlives the process that asked for it: the child dies with it (``terminate_exports`` at exit,
and the kernel's parent-death signal if the process is killed outright), its scratch folder is removed, and a
scratch folder whose owner died anyway is swept by the next export into that cache.
"""
from __future__ import annotations

import atexit
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from da3_ros.engines.base import BackendUnavailable
from da3_ros.engines.cache import ArtifactCache, data_file
from da3_ros.engines.cpu_features import int8_weight_bits
from da3_ros.core.errors import ConfigError
from da3_ros.models import loading
from da3_ros.models.registry import VARIANTS, Variant, get_variant

_LOG = logging.getLogger(__name__)
GRAPH_VERSION = 2  # 2: no NonZero (mat_to_quat), no default ScatterND reduction; old cached graphs are re-exported
META_KEY = "da3_ros"
FUSED_ATTENTION_OP = "com.microsoft::MultiHeadAttention"  # ONNX Runtime's fused attention (export.fused_attention)
PARENT_ENV = "DA3_EXPORT_PARENT_PID"  # tells the export child whose death must end it
WRITTEN_PREFIX = "da3_ros exported: "  # the export child's stdout line for each graph it has written
SCRATCH_PREFIX = ".export-"
OWNER_LOCK = ".owner.lock"  # in a scratch folder, flock-ed by its live owner
STALE_SCRATCH_S = 60.0  # a folder this old whose owner's lock is free was left by a killed process
# A graph exported ahead of need (the N-1 graph for a camera that may go silent, temporal windows) runs at
# this niceness: at normal priority it took half of a 2-core robot's CPU from the running forward for a minute
# (2-view forward 980 -> 1,720 ms in the demo); at +10 the scheduler gives it ~10 % of a busy core. The price:
# a set that needs that graph before it is done waits longer for it.
AHEAD_NICE = 10

_LIVE: dict[int, tuple[subprocess.Popen, Path]] = {}  # pid -> (export child, its scratch folder)
_LIVE_LOCK = threading.Lock()


class GraphMismatch(ConfigError):
    """A given .onnx file was exported for another rig (views, size or conditioning)."""


def read_metadata(path: Path) -> dict:
    """The da3_ros metadata of an exported graph (ValueError for a file da3_ros did not export)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise ConfigError(f"{path} was not exported by da3_ros (no '{META_KEY}' metadata); use `da3-ros export`")
    return json.loads(props[META_KEY])


def export_command(model: str, n_views: int, hw: tuple[int, int], conditioned: bool, precision: str,
                   out: str | Path, fused_attention: bool = False) -> list[str]:
    """The ``da3-ros export`` command line that writes the graph for this rig."""
    cmd = ["da3-ros", "export", "--model", model, "--views", str(n_views), "--height", str(hw[0]),
           "--width", str(hw[1]), "--precision", precision, "--out", str(out)]
    return cmd + (["--conditioned"] if conditioned else []) + (["--fused-attention"] if fused_attention else [])


class OnnxSource:
    """The variant, label and ONNX graphs of one model, for fixed-shape backends."""

    def __init__(self, model: str, cache: ArtifactCache):
        self.model = model
        self.cache = cache
        self.file = Path(model).expanduser() if model.endswith(".onnx") else None
        # graphs this source exported: on a set's path (it waited for them) and ahead of need (in the background)
        self.exports = {"live": 0, "ahead": 0}
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

    def key(self, n_views: int, hw: tuple[int, int], conditioned: bool, precision: str,
            fused_attention: bool = False) -> dict:
        """Everything an exported graph depends on (an int8 graph: also its weight bits on this CPU)."""
        key = {"model": self.model, "weights": weights_fingerprint(self.model), "n_views": int(n_views),
               "hw": [int(hw[0]), int(hw[1])], "conditioned": bool(conditioned), "precision": precision,
               "graph_version": GRAPH_VERSION}
        if precision == "int8":
            key["int8_weight_bits"] = int8_weight_bits()
        if fused_attention:  # absent for plain graphs: their keys (and caches) stay as they were
            key["attention"] = FUSED_ATTENTION_OP
        return key

    def onnx_for(self, n_views: int, hw: tuple[int, int], conditioned: bool, precision: str = "fp32",
                 fused_attention: bool = False, background: bool = False) -> Path:
        """The verified .onnx for this rig shape: the given file, the cached one, or a fresh export.

        ``fused_attention``: for a spec, the ONNX-Runtime-only graph with MultiHeadAttention (a given file is
        used as it is). ``background``: a graph prepared ahead of need, exported at a lower CPU priority.
        """
        if self.file is not None:
            want = {"n_views": n_views, "height": hw[0], "width": hw[1], "conditioned": conditioned}
            got = {k: self.meta.get(k) for k in want}
            if got != want:
                raise GraphMismatch(
                    f"{self.file} was exported for {got}, this set needs {want}: run "
                    f"`{' '.join(export_command('<checkpoint>', n_views, hw, conditioned, precision, '<file>'))}`")
            return self.file
        return self.onnx_for_views([n_views], hw, conditioned, precision, fused_attention, background)[0]

    def onnx_for_views(self, views: list[int], hw: tuple[int, int], conditioned: bool, precision: str = "fp32",
                       fused_attention: bool = False, background: bool = False) -> list[Path]:
        """``onnx_for`` of several view counts at one size: the missing graphs exported by ONE child process.

        The child loads the model once (a small model's imports and build are ~3 of its ~6 s per graph here).
        The first missing graph's lock is held from the check until it is sealed (others wanting it wait, then
        load it). A later one is locked only once the child has written it, and sealed then unless another
        exporter was first: until then a set that needs it exports it itself, at its own priority, instead of
        waiting behind the graphs before it in a child prepared ahead at a lower one.
        """
        if self.file is not None:
            return [self.onnx_for(n, hw, conditioned, precision, fused_attention, background) for n in views]
        keys = {n: self.key(n, hw, conditioned, precision, fused_attention) for n in views}
        paths = {n: self.cache.path_for("onnx", key, "onnx") for n, key in keys.items()}
        missing = [n for n, path in paths.items() if not self._verified(path)]
        first: Any = None  # the held lock of the first missing graph (never two locks held at once: no deadlock)
        try:
            while missing and first is None:
                lock = self.cache.lock(paths[missing[0]])
                lock.__enter__()
                if self.cache.verified(paths[missing[0]]):  # made by another exporter since the check
                    lock.__exit__(None, None, None)
                    missing.pop(0)
                else:
                    first = lock
            if missing and importlib.util.find_spec("torch") is None:
                cmd = export_command(self.model, missing[0], hw, conditioned, precision, '<file>.onnx',
                                     fused_attention)
                raise BackendUnavailable(
                    f"no exported graph for {self.model} ({missing[0]} views, {hw[1]}x{hw[0]}, {precision}) in "
                    f"{self.cache.root}, and torch is not installed here to export it. Run, where torch is: "
                    f"`{' '.join(cmd)}` and set model to that file")

            def take(n: int, put_in_place: Callable[[], None]) -> None:  # the child has written graph n
                nonlocal first
                with self.cache.lock(paths[n]):
                    if n != missing[0] and self.cache.verified(paths[n]):
                        return  # another exporter sealed it meanwhile: ours is dropped with the scratch folder
                    put_in_place()
                    self.cache.seal(paths[n], keys[n])
                    self.exports["ahead" if background else "live"] += 1
                if n == missing[0]:
                    first.__exit__(None, None, None)
                    first = None

            if missing:
                self._export({n: paths[n] for n in missing}, hw, conditioned, precision, fused_attention,
                             background, take)
        finally:
            if first is not None:
                first.__exit__(None, None, None)
        return [paths[n] for n in views]

    def _verified(self, path: Path) -> bool:
        with self.cache.lock(path):  # never judged while another process renames it into place
            return self.cache.verified(path)

    def _export(self, paths: dict[int, Path], hw: tuple[int, int], conditioned: bool, precision: str,
                fused_attention: bool, background: bool, take: Callable[[int, Callable[[], None]], None]) -> None:
        parent = next(iter(paths.values())).parent
        parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_scratch(parent)
        # Export under the final file names in a scratch directory (a large model's graph names its weights
        # file), then move the weights first and the graph last: a crash leaves no graph without weights.
        with _scratch_dir(parent) as scratch:
            tmps = {str(scratch / path.name): n for n, path in paths.items()}
            cmd = [sys.executable, "-m", "da3_ros.export.onnx_export", "--model", self.model,
                   "--views", *(str(n) for n in paths), "--height", str(hw[0]), "--width", str(hw[1]),
                   "--precision", precision, "--out", *tmps]
            cmd += ["--conditioned"] if conditioned else []
            cmd += ["--fused-attention"] if fused_attention else []
            _LOG.info("exporting %s for %s views at %dx%d (%s) into %s", self.model, "/".join(map(str, paths)),
                      hw[1], hw[0], precision, self.cache.root)

            def written(tmp_name: str) -> None:
                n = tmps.pop(tmp_name)
                tmp, path = Path(tmp_name), paths[n]

                def put_in_place() -> None:
                    data = data_file(tmp)
                    if data.is_file():
                        data.replace(data_file(path))
                    tmp.replace(path)

                take(n, put_in_place)

            returncode, stderr = _run_export(cmd, scratch, AHEAD_NICE if background else 0, written)
            if returncode != 0 or tmps:
                tail = "\n".join(stderr.strip().splitlines()[-5:])
                raise RuntimeError(f"export of {self.model} failed (exit {returncode}): {tail}")


class _scratch_dir:  # noqa: N801 (a context manager used like tempfile.TemporaryDirectory)
    """A scratch folder in the cache, flock-ed by its owner while it lives, removed on exit however it ends."""

    def __init__(self, parent: Path):
        self.path = Path(tempfile.mkdtemp(dir=parent, prefix=SCRATCH_PREFIX))
        self._fd = os.open(self.path / OWNER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # held while this process lives: a sweeper leaves it alone

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)


def sweep_stale_scratch(root: Path) -> None:
    """Remove scratch folders left in ``root`` by processes killed outright (SIGKILL: no clean-up ran)."""
    for d in root.glob(SCRATCH_PREFIX + "*"):
        try:
            if time.time() - d.stat().st_mtime < STALE_SCRATCH_S:  # maybe still being set up by its owner
                continue
            fd = os.open(d / OWNER_LOCK, os.O_RDWR | os.O_CLOEXEC)  # no lock file: not ours to judge
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: its owner is gone
        except BlockingIOError:
            continue
        finally:
            os.close(fd)
        _LOG.info("removing %s, left by an export whose process was killed", d)
        shutil.rmtree(d, ignore_errors=True)


def _run_export(cmd: list[str], scratch: Path, nice: int = 0,
                written: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Run the export child, registered so that ``terminate_exports`` can end it; (exit status, stderr).

    ``nice``: added to the child's niceness (an unprivileged process may lower its child's priority only).
    ``written``: called with each file the child announces on stdout (``WRITTEN_PREFIX``) as it completes.
    """
    env = {**os.environ, PARENT_ENV: str(os.getpid())}  # the child asks the kernel to kill it when we die
    log = scratch / "export.log"  # stderr to a file: stdout is read line by line, and a full pipe would block
    with open(log, "w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        if nice:
            try:
                os.setpriority(os.PRIO_PROCESS, proc.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
            except OSError as exc:  # it has already ended, or the platform refuses: it runs at our priority
                _LOG.debug("could not lower the export's priority: %s", exc)
        with _LIVE_LOCK:
            _LIVE[proc.pid] = (proc, scratch)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # other lines: what the network's code prints
                if line.startswith(WRITTEN_PREFIX) and written is not None:
                    written(line[len(WRITTEN_PREFIX):].rstrip("\n"))
            proc.wait()
        except BaseException:  # taking a graph failed: the rest of this export is not wanted either
            proc.kill()
            proc.wait()
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.pop(proc.pid, None)
        err.seek(0)
        return proc.returncode, err.read()


def live_exports() -> list[subprocess.Popen]:
    """The export children of this process that are running now."""
    with _LIVE_LOCK:
        return [proc for proc, _ in _LIVE.values()]


def terminate_exports() -> None:
    """Kill this process's export children and remove their scratch folders: the process is ending.

    Runs at exit (atexit); an export never holds up a shutdown: the graph is exported again when next needed.
    """
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for proc, _ in live:
        proc.kill()  # SIGKILL: it writes only into its scratch folder, removed below
    for proc, scratch in live:
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            _LOG.warning("export process %d did not end after SIGKILL", proc.pid)
        shutil.rmtree(scratch, ignore_errors=True)


atexit.register(terminate_exports)


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
    """Identify the weights behind a spec cheaply, with the same answer before and after a download.

    The spec for random weights, else the weights file's path, size and modification time (a re-downloaded or
    replaced checkpoint gets a new graph). A Hugging Face id (or a variant name: its repository) is resolved
    first through the loader (``loading.download``: the local cache, else the download the export needs
    anyway), so the key a graph is exported under is the key every later process computes. Only when that
    fails (offline without the files, no hub library) is the spec the key, said once in the log: the graph
    is then exported again once the weights are there.
    """
    if model.startswith(loading.RANDOM_PREFIX):
        return model
    path = Path(model).expanduser()
    if path.is_dir():
        weights = path / loading.WEIGHTS_NAME
    else:
        repo = VARIANTS[model].hf_repo if model in VARIANTS else model
        try:
            weights = loading.download(repo) / loading.WEIGHTS_NAME
        except (loading.CheckpointError, ImportError) as exc:
            if model not in _SPEC_KEYED:
                _SPEC_KEYED.add(model)
                _LOG.warning("cannot resolve the weights of %s (%s): its graphs are cached under the name alone, "
                             "so once the weights are downloaded the key changes and each graph is exported "
                             "again", model, exc)
            return f"spec:{model}"
    if not weights.is_file():
        return f"spec:{model}"
    st = weights.resolve().stat()
    return f"{weights.resolve()}:{st.st_size}:{st.st_mtime_ns}"


_SPEC_KEYED: set[str] = set()  # the specs whose weights could not be resolved (warned once each)
