"""A minimal static transform tree (what /tf_static carries) for looking up known rig extrinsics.

tf2_ros is not a dependency: the node only needs fixed camera-to-camera transforms, which are static, so a
tree of latest-known static edges and a walk to the common ancestor is enough. ROS-free.
"""
from __future__ import annotations

import threading

import numpy as np

from da3_ros.core.geometry import invert_T


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

    def _chain(self, frame: str) -> list[tuple[str, np.ndarray]]:
        """[(frame, T_root_frame) ...] from ``frame`` up to its root (cycles are cut)."""
        chain, T, seen = [(frame, np.eye(4))], np.eye(4), {frame}
        while frame in self._parent:
            parent, T_parent_frame = self._parent[frame]
            if parent in seen:
                break
            T = T_parent_frame @ T
            chain.append((parent, T))  # T maps the starting frame into `parent`
            seen.add(parent)
            frame = parent
        return chain

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """T_target_source (maps points from ``source`` to ``target``), or None if not connected."""
        if target == source:
            return np.eye(4)
        with self._lock:
            up_source = dict(self._chain(source))  # ancestor -> T_ancestor_source
            for ancestor, T_ancestor_target in self._chain(target):
                if ancestor in up_source:
                    return invert_T(T_ancestor_target) @ up_source[ancestor]
        return None

    def __len__(self) -> int:
        return len(self._parent)
