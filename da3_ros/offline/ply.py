"""Point clouds as binary PLY (little endian): x y z float32 and, when given, red green blue uchar.

The format CloudCompare, MeshLab, Open3D and plyfile read. ROS-free.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def ply_bytes(points_xyz: np.ndarray, rgb: np.ndarray | None = None, comment: str = "") -> bytes:
    """The PLY file of (M, 3) points and optional (M, 3) uint8 colours, as bytes."""
    points_xyz = np.asarray(points_xyz)
    if points_xyz.ndim != 2 or points_xyz.shape[1] != 3:
        raise ValueError(f"points must be (M, 3), got shape {points_xyz.shape}")
    m = len(points_xyz)
    names, formats = ["x", "y", "z"], ["<f4"] * 3
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (m, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"colours must be ({m}, 3) uint8, got shape {rgb.shape} dtype {rgb.dtype}")
        names += ["red", "green", "blue"]
        formats += ["u1"] * 3
    vertex = np.empty(m, dtype=np.dtype({"names": names, "formats": formats}))
    for k, name in enumerate("xyz"):
        vertex[name] = points_xyz[:, k]
    if rgb is not None:
        for k, name in enumerate(("red", "green", "blue")):
            vertex[name] = rgb[:, k]
    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {line}" for line in comment.splitlines() if line]
    header += [f"element vertex {m}"] + [f"property float {n}" for n in "xyz"]
    if rgb is not None:
        header += [f"property uchar {n}" for n in ("red", "green", "blue")]
    header.append("end_header")
    return ("\n".join(header) + "\n").encode("ascii") + vertex.tobytes()


def write_ply(path: str | Path, points_xyz: np.ndarray, rgb: np.ndarray | None = None, comment: str = "") -> None:
    """Write (M, 3) points (+ (M, 3) uint8 colours) to ``path`` as binary little-endian PLY."""
    Path(path).write_bytes(ply_bytes(points_xyz, rgb, comment))
