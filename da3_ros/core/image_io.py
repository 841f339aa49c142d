"""Image files and decoded video frames -> RGB arrays, in one place (OpenCV reads and decodes BGR)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    """An OpenCV (H, W, 3) BGR frame as a contiguous RGB array."""
    return np.ascontiguousarray(bgr[:, :, ::-1])


def read_rgb(path: str | Path) -> np.ndarray:
    """The image file at ``path`` as (H, W, 3) uint8 RGB; FileNotFoundError naming it if it cannot be read."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {str(path)!r}")
    return bgr_to_rgb(bgr)
