"""A minimal transform tree: /tf_static's edges (rig extrinsics, mounts), and /tf's over a few seconds.

tf2_ros is not a dependency: the node needs fixed camera-to-camera transforms (static: a tree of latest-known
edges and a walk to the common ancestor) and, for a range sensor moving against the cameras, the chain at the
sensor message's stamp (``TfBuffer``: timed edges, interpolated). ROS-free.
"""
from __future__ import annotations

import bisect
import math
import threading
from collections import deque

import numpy as np

from da3_ros.core.geometry import R_from_quaternion, invert_T, quaternion_from_R


class StaticTfBuffer:
    """Static edges parent -> child (T_parent_child); a child has one parent, the last one received wins."""

    def __init__(self) -> None:
        self._parent: dict[str, tuple[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def add(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        if not parent or not child or parent == child:
            raise ValueError(f"bad static transform {parent!r} -> {child!r}")
        with self._lock:
            self._parent[child] = (parent, np.asarray(T_parent_child, dtype=np.float64))

    def _edge(self, frame: str, stamp_ns: int | None) -> tuple[str, np.ndarray] | None:
        """(parent, T_parent_frame) of ``frame``, or None at a root; a static tree has no time."""
        return self._parent.get(frame)

    def _chain(self, frame: str, stamp_ns: int | None = None) -> list[tuple[str, np.ndarray]]:
        """[(frame, T_root_frame) ...] from ``frame`` up to its root (cycles are cut)."""
        chain, T, seen = [(frame, np.eye(4))], np.eye(4), {frame}
        while (edge := self._edge(frame, stamp_ns)) is not None:
            parent, T_parent_frame = edge
            if parent in seen:
                break
            T = T_parent_frame @ T
            chain.append((parent, T))  # T maps the starting frame into `parent`
            seen.add(parent)
            frame = parent
        return chain

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray | None:
        """T_target_source (maps points from ``source`` to ``target``), or None if not connected.

        ``stamp_ns``: the time of the lookup, for a buffer with timed edges (``TfBuffer``); static edges hold
        at any time.
        """
        if target == source:
            return np.eye(4)
        with self._lock:
            up_source = dict(self._chain(source, stamp_ns))  # ancestor -> T_ancestor_source
            for ancestor, T_ancestor_target in self._chain(target, stamp_ns):
                if ancestor in up_source:
                    return invert_T(T_ancestor_target) @ up_source[ancestor]
        return None

    def __len__(self) -> int:
        return len(self._parent)


def _interpolate(a: np.ndarray, b: np.ndarray, f: float) -> np.ndarray:
    """The transform a fraction ``f`` of the way from ``a`` to ``b``: translation linear, rotation slerp."""
    qa, qb = quaternion_from_R(a[:3, :3]), quaternion_from_R(b[:3, :3])
    if float(qa @ qb) < 0:  # the short way round
        qb = -qb
    angle = math.acos(min(1.0, float(qa @ qb)))
    q = qa if angle < 1e-9 else (math.sin((1 - f) * angle) * qa + math.sin(f * angle) * qb) / math.sin(angle)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R_from_quaternion(q / np.linalg.norm(q)), (1 - f) * a[:3, 3] + f * b[:3, 3]
    return T


class TfBuffer(StaticTfBuffer):
    """/tf_static's edges, plus /tf's (timed) for the last ``keep_s``: a lookup at a stamp walks both.

    A static edge wins over a timed one for the same child (a robot's mounts are static). A timed edge is
    interpolated between the samples around the stamp; outside them it holds for ``tolerance_s`` at most (a
    publisher's period), else the chain is broken (None): no extrapolation.
    """

    def __init__(self, keep_s: float = 10.0, tolerance_s: float = 0.2) -> None:
        super().__init__()
        self._timed: dict[str, deque[tuple[int, str, np.ndarray]]] = {}
        self._keep_ns, self._tolerance_ns = int(keep_s * 1e9), int(tolerance_s * 1e9)

    def add_timed(self, parent: str, child: str, T_parent_child: np.ndarray, stamp_ns: int) -> None:
        """A /tf edge at ``stamp_ns``; samples older than ``keep_s`` before the newest are forgotten."""
        if not parent or not child or parent == child:
            raise ValueError(f"bad transform {parent!r} -> {child!r}")
        with self._lock:
            samples = self._timed.setdefault(child, deque())
            if samples and stamp_ns < samples[-1][0]:  # out of order (or the clock went back): start afresh
                samples.clear()
            samples.append((stamp_ns, parent, np.asarray(T_parent_child, dtype=np.float64)))
            while samples[-1][0] - samples[0][0] > self._keep_ns:
                samples.popleft()

    def _edge(self, frame: str, stamp_ns: int | None) -> tuple[str, np.ndarray] | None:
        static = self._parent.get(frame)
        if static is not None or stamp_ns is None or frame not in self._timed:
            return static
        samples = self._timed[frame]
        stamps = [s for s, _, _ in samples]
        k = bisect.bisect_left(stamps, stamp_ns)
        if k < len(samples) and stamps[k] == stamp_ns:
            return samples[k][1], samples[k][2]
        if 0 < k < len(samples) and samples[k - 1][1] == samples[k][1]:
            (t0, parent, a), (t1, _, b) = samples[k - 1], samples[k]
            return parent, _interpolate(a, b, (stamp_ns - t0) / (t1 - t0))
        nearest = samples[min(k, len(samples) - 1)] if k == 0 or k == len(samples) else None
        if nearest is not None and abs(nearest[0] - stamp_ns) <= self._tolerance_ns:
            return nearest[1], nearest[2]
        return None
