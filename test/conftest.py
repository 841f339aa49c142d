"""Shared fixtures: the real example images, upstream DA3 as the parity reference."""
from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = Path(os.environ.get("DA3_EXAMPLES", REPO.parent / "shared" / "data" / "da3_examples"))
SHM_T0 = pytest.StashKey[float]()  # when the session started (see pytest_sessionfinish)

try:  # upstream's api.py needs torchvision.transforms; see shims/README.md
    import torchvision.transforms  # noqa: F401
except Exception:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.path.insert(0, str(Path(__file__).parent / "shims"))


# The test files that take longest, longest first (seconds of one file on one worker, three workers on a 2-core
# EPYC). pytest-xdist hands files to workers in collection order (scripts/test.sh turns off its own reordering by
# test count): the long ones start first and the short ones fill the end, so the workers finish together. In
# alphabetical order the legs and the soak came last and one worker ran 40 s after the others.
LONGEST_FIRST = ("test_feature_matrix", "test_triton", "test_onnx", "test_node_faults", "test_openvino", "test_node",
                 "test_trt_compat", "test_temporal_window", "test_trt_refusal", "test_parity", "test_prepare_ahead",
                 "test_graph", "test_cache", "test_lifecycle", "test_variants", "test_int8", "test_numpy2_leg",
                 "test_shutdown", "test_jazzy_leg", "test_bag", "test_node_nav", "test_node_metric", "test_node_params",
                 "test_soak", "test_node_range", "test_engine_settings", "test_metric", "test_fused_attention")
# (288, 115, 114, 100, 100, 89, 68, 55, 52, 51, 48, 45, 43, 36, 33, 31, 29, 28, 28, 27, 27, 25, 24, 23, 21, 19, 19, 18)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the files of ``LONGEST_FIRST`` first, in its order; the others after, as collected."""
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a file's tests keep their order


# Shared-memory segments a process killed outright leaves in /dev/shm (RAM): Fast DDS's (70 MB each with the
# project's profile, two to three per run from the tests that kill nodes) and pytriton's (a killed server's).
LEFT_BY_THE_KILLED = ("fastdds_", "sem.fastdds_", "psm_", "pytrtion")
SHM = Path("/dev/shm")


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[SHM_T0] = time.time()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Unlink the segments this run's killed processes left: made during the run, ours, mapped by no process.

    Only the outermost session does it, after its workers ended (not a worker, nor a leg's nested pytest, which
    runs while other workers' participants may be between creating a segment and mapping it).
    """
    if hasattr(session.config, "workerinput") or os.environ.get("PYTEST_XDIST_WORKER") or not SHM.is_dir():
        return
    t0, uid, mapped = session.config.stash.get(SHM_T0, time.time()), os.getuid(), _mapped_files()
    for path in SHM.iterdir():
        base = path.with_name(path.name.removesuffix("_el"))  # Fast DDS's lock file beside its segment
        try:
            st = path.stat()
        except OSError:
            continue
        if (path.name.startswith(LEFT_BY_THE_KILLED) and st.st_uid == uid and st.st_ctime >= t0
                and str(base) not in mapped and str(path) not in mapped):
            path.unlink(missing_ok=True)


def _mapped_files() -> set[str]:
    """Every file a process we can read maps (/proc/<pid>/maps).

    One we cannot read (a container's init, another user's) is none of ours: our tests' processes are our own.
    """
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue
        mapped.update(line.split(maxsplit=5)[5] for line in text.splitlines() if line.count(" ") >= 5
                      and "/dev/shm/" in line)
    return {m.strip() for m in mapped}


@pytest.fixture(scope="session", autouse=True)
def graph_cache_of_this_run(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Path]:
    """The default graph cache ($XDG_CACHE_HOME/da3_ros) of every node and engine the suite starts, in this run.

    A test run never fills the user's ~/.cache (about 2 GB of graphs a run). The workers of one run share it (the
    parent of each worker's base directory), as they would share ~/.cache.
    """
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if hasattr(request.config, "workerinput") else base) / "xdg-cache"  # an xdist worker's
    root.mkdir(exist_ok=True)
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(root)
    yield root
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


def module_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A directory for a module-scoped fixture, removed when the module is done unless one of its tests failed.

    What tmp_path_retention_policy = failed (setup.cfg) does for a test's tmp_path, for the module caches that hold
    graphs (up to 3 GB each): three workers keeping every module's graphs to the end of the run filled the disk of a
    CI machine.
    """
    path = tmp_path_factory.mktemp(name)
    failed_before = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)


def copy_graphs(src: Path, dst: Path) -> list[Path]:
    """Copy the sealed ONNX graphs of cache ``src`` (graph, weights beside it, sidecar) into cache ``dst``.

    A test of what an engine does with its own cache (compiles, gates, corrupt blobs) starts from a private copy
    of a graph exported once for its module, instead of exporting the same graph again (~5 CPU-s each).
    """
    from da3_ros.engines.cache import SIDECAR_SUFFIX, data_file

    dst.mkdir(parents=True, exist_ok=True)
    graphs = sorted(src.glob("onnx-*.onnx"))
    assert graphs, f"no graph in {src} to copy"
    for graph in graphs:
        for f in (graph, data_file(graph), graph.with_name(graph.name + SIDECAR_SUFFIX)):
            if f.is_file():
                shutil.copyfile(f, dst / f.name)  # not a hard link: a test may change its copy
    return [dst / g.name for g in graphs]


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return np.ascontiguousarray(bgr[:, :, ::-1])


@pytest.fixture(scope="session")
def soh_images() -> list[np.ndarray]:
    """The two real 1208x680 Sydney Opera House photos from upstream's examples."""
    paths = [EXAMPLES / "SOH_000.png", EXAMPLES / "SOH_010.png"]
    missing = [p for p in paths if not p.is_file()]
    assert not missing, f"example images missing: {missing} (set DA3_EXAMPLES)"
    return [read_rgb(p) for p in paths]


@pytest.fixture(scope="session")
def video_path() -> Path:
    p = EXAMPLES / "robot_unitree.mp4"
    assert p.is_file(), f"example video missing: {p}"
    return p


@pytest.fixture
def domain_id() -> int:
    """A ROS_DOMAIN_ID of its own for each test."""
    from ros_harness import _domains

    return next(_domains)


@pytest.fixture
def checker(domain_id):
    from ros_harness import Checker

    c = Checker(domain_id)
    yield c
    c.close()
