"""The parity gate of a built engine: its outputs against the reference's on the same fixed input."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class EngineParityError(RuntimeError):
    """A freshly built engine disagrees with the reference network; it is not cached."""


def version_tuple(version: str) -> tuple[int, ...]:
    """(major, minor) of a version string such as '10.14.1.48'; () when it does not parse."""
    try:
        return tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return ()


def parity(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray],
           names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Per output name: (Pearson correlation, max relative error = max|a-b| / max|b|).

    Non-finite values in either set give (nan, inf), which fails any threshold. Raises ValueError when ``names``
    is empty or an output is missing, empty, or shaped differently in the two sets.
    """
    if not names:
        raise ValueError("parity needs at least one output name")
    result = {}
    for name in names:
        if name not in ours or name not in ref:
            raise ValueError(f"output {name!r} missing: ours has {sorted(ours)}, reference has {sorted(ref)}")
        a, b = np.asarray(ours[name], np.float64), np.asarray(ref[name], np.float64)
        if a.shape != b.shape:
            raise ValueError(f"output {name!r}: shape {a.shape} differs from the reference's {b.shape}")
        if a.size == 0:
            raise ValueError(f"output {name!r} is empty")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            result[name] = (float("nan"), float("inf"))
            continue
        da, db = a - a.mean(), b - b.mean()
        denom = np.sqrt((da * da).sum() * (db * db).sum())
        corr = float((da * db).sum() / denom) if denom > 0 else float(np.array_equal(a, b))
        err, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
        result[name] = (corr, err / scale if scale > 0 else (0.0 if err == 0 else float("inf")))
    return result


def check_parity(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], names: Sequence[str],
                 min_corr: float, max_rel: float, trt_version: str) -> dict[str, tuple[float, float]]:
    """``parity()``, raising EngineParityError that names every output outside the thresholds."""
    stats = parity(ours, ref, names)
    bad = [f"{n}: correlation {c:.6f} (need >= {min_corr}), max relative error {r:.4g} (need <= {max_rel})"
           for n, (c, r) in stats.items() if not (c >= min_corr and r <= max_rel)]  # 'not >=' also catches nan
    if bad:
        hint = (" TensorRT 10.3 (JetPack 6) has a known bug that mis-scales Depth Anything 3 depth, fixed in "
                "TensorRT 10.14+: upgrade TensorRT, or use the onnxruntime or torch backend."
                if version_tuple(trt_version) < (10, 14) else "")
        raise EngineParityError(f"TensorRT {trt_version} engine disagrees with the reference on a fixed input; "
                                f"not caching it. " + "; ".join(bad) + "." + hint)
    return stats


def default_parity_names(output_names: Sequence[str]) -> list[str]:
    """'depth' plus 'depth_conf'/'sky' when present: poses from a random input are too ill-conditioned."""
    return [n for n in ("depth", "depth_conf", "sky") if n in output_names]
