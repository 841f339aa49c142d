"""Pictures for people: colourised depth and confidence, with a caption (e.g. "UNTRAINED")."""
from __future__ import annotations

import cv2
import numpy as np


def colorize(values: np.ndarray, valid: np.ndarray | None = None, invert: bool = False) -> np.ndarray:
    """HxW float -> HxWx3 BGR uint8 (turbo), stretched between the 2nd and 98th percentile of valid pixels.

    The stretch is for display only; published depth is never normalised.
    """
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values) if valid is None else valid & np.isfinite(values)
    if invert:  # inverse depth: near is warm, far is cold, sky goes dark
        with np.errstate(divide="ignore"):
            values = np.where(ok & (values > 0), 1.0 / np.where(values > 0, values, 1.0), np.nan)
        ok = ok & np.isfinite(values)
    out = np.zeros(values.shape + (3,), np.uint8)
    if not ok.any():
        return out
    lo, hi = np.percentile(values[ok], [2, 98])
    norm = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1)
    colored = cv2.applyColorMap((np.nan_to_num(norm) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    out[ok] = colored[ok]
    return out


def caption(img_bgr: np.ndarray, text: str) -> np.ndarray:
    """Draw ``text`` on a dark band across the top of the image (returns a copy)."""
    img = img_bgr.copy()
    (w1, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)
    scale = min(0.6, 0.95 * img.shape[1] / w1)  # always fits the width
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(img, (0, 0), (img.shape[1], th + base + 8), (0, 0, 0), -1)
    cv2.putText(img, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def depth_panel(rgb_proc: np.ndarray, depth: np.ndarray, confidence: np.ndarray | None, text: str) -> np.ndarray:
    """Image | depth | confidence side by side (BGR), captioned."""
    tiles = [rgb_proc[:, :, ::-1], colorize(depth, invert=True)]
    if confidence is not None:
        tiles.append(colorize(confidence))
    return caption(np.hstack(tiles), text)
