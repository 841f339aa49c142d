"""Upstream-identical image preprocessing, and the exact pinhole mapping between camera and network pixels.

Pixels follow upstream ``InputProcessor`` step for step (same cv2 resizes and interpolations, same
normalisation arithmetic), so the network sees bit-identical tensors. Geometry is carried as one 3x3 affine
``A_proc_cam`` per view (camera pixel -> network pixel, pixel centres at integers as in OpenCV/ROS):
``K_proc = A_proc_cam @ K_cam`` and back. Upstream scales cx, cy by the size ratio alone, which is off by
(ratio - 1) / 2 px against where cv2.resize actually samples; we use the exact centre-aligned mapping.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from da3_ros.core.errors import ConfigError

PATCH_SIZE = 14
METHODS = ("upper_bound_resize", "upper_bound_crop", "lower_bound_resize", "lower_bound_crop")
MIXED_MODES = ("crop", "stretch")  # how views of different sizes get one network size (see plan_batch)
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]  # ImageNet, as torchvision's Normalize
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]


@dataclass(frozen=True)
class ResizePlan:
    """How one camera image becomes a network image: the size after each stage and the pixel mapping."""

    src_hw: tuple[int, int]
    bound_hw: tuple[int, int]  # after the aspect-preserving boundary resize
    resized_hw: tuple[int, int]  # after the resize to multiples of 14 (= bound_hw for *_crop methods)
    crop_tl: tuple[int, int]  # (top, left) of the final crop window in the resized image
    proc_hw: tuple[int, int]  # network input size (multiples of 14)
    A_proc_cam: np.ndarray  # 3x3 float64, homogeneous camera pixel -> network pixel

    def stretched(self, hw: tuple[int, int]) -> "ResizePlan":
        """Return this plan resizing to ``hw`` instead of cropping to it (see ``plan_batch``)."""
        return _stretch(self, hw)

    def cropped(self, hw: tuple[int, int]) -> "ResizePlan":
        """Return this plan followed by a centre crop to ``hw`` (upstream's batch-shape unification)."""
        top, left = (self.proc_hw[0] - hw[0]) // 2, (self.proc_hw[1] - hw[1]) // 2
        if (top, left) == (0, 0) and hw == self.proc_hw:
            return self
        return ResizePlan(self.src_hw, self.bound_hw, self.resized_hw,
                          (self.crop_tl[0] + top, self.crop_tl[1] + left), hw,
                          _crop_affine(top, left) @ self.A_proc_cam)


def _stretch(plan: ResizePlan, hw: tuple[int, int]) -> ResizePlan:
    """``plan`` with its last resize going to ``hw`` directly (whole view kept, aspect changed)."""
    if plan.crop_tl != (0, 0) or plan.resized_hw != plan.proc_hw:
        raise ConfigError("mixed_resolution 'stretch' works with the *_resize methods, not with *_crop (which crop "
                          "each view on their own)")
    A_bound = _scale_affine(plan.bound_hw[1] / plan.src_hw[1], plan.bound_hw[0] / plan.src_hw[0])
    return ResizePlan(plan.src_hw, plan.bound_hw, hw, (0, 0), hw,
                      _scale_affine(hw[1] / plan.bound_hw[1], hw[0] / plan.bound_hw[0]) @ A_bound)


def _scale_affine(sx: float, sy: float) -> np.ndarray:
    # cv2.resize maps pixel centres: x' + 0.5 = (x + 0.5) * s
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def _crop_affine(top: int, left: int) -> np.ndarray:
    return np.array([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]])


def _nearest_multiple(x: int, p: int) -> int:
    down = (x // p) * p
    up = down + p
    return up if abs(up - x) <= abs(x - down) else down


def plan_resize(src_hw: tuple[int, int], process_res: int = 504, method: str = "upper_bound_resize") -> ResizePlan:
    """Plan upstream's resize of an image of size ``src_hw`` (H, W)."""
    if method not in METHODS:
        raise ConfigError(f"process_res_method must be one of {METHODS}, got {method!r}")
    h0, w0 = src_hw
    side = max(w0, h0) if method.startswith("upper") else min(w0, h0)
    h1, w1 = h0, w0
    if side != process_res:
        scale = process_res / float(side)
        w1, h1 = max(1, int(round(w0 * scale))), max(1, int(round(h0 * scale)))
    A = _scale_affine(w1 / w0, h1 / h0)
    if method.endswith("resize"):
        w2, h2 = max(1, _nearest_multiple(w1, PATCH_SIZE)), max(1, _nearest_multiple(h1, PATCH_SIZE))
        return ResizePlan((h0, w0), (h1, w1), (h2, w2), (0, 0), (h2, w2), _scale_affine(w2 / w1, h2 / h1) @ A)
    w2, h2 = (w1 // PATCH_SIZE) * PATCH_SIZE, (h1 // PATCH_SIZE) * PATCH_SIZE
    top, left = (h1 - h2) // 2, (w1 - w2) // 2
    return ResizePlan((h0, w0), (h1, w1), (h1, w1), (top, left), (h2, w2), _crop_affine(top, left) @ A)


def plan_batch(src_hws: list[tuple[int, int]], process_res: int = 504, method: str = "upper_bound_resize",
               mixed: str = "crop") -> list[ResizePlan]:
    """Plan a batch: one network size for all views (the smallest H and the smallest W of their own sizes).

    ``mixed="crop"`` (upstream's rule): a view of another size is centre-cropped to it, losing part of its
    field of view. ``"stretch"``: it is resized to it instead, keeping its whole field of view at the price of a
    changed pixel aspect (fx / fy differs from the camera's; the intrinsics follow exactly). Same cost either way.
    """
    if mixed not in MIXED_MODES:
        raise ConfigError(f"mixed_resolution must be one of {MIXED_MODES}, got {mixed!r}")
    plans = [plan_resize(hw, process_res, method) for hw in src_hws]
    hw_min = (min(p.proc_hw[0] for p in plans), min(p.proc_hw[1] for p in plans))
    if mixed == "stretch":
        return [p if p.proc_hw == hw_min else p.stretched(hw_min) for p in plans]
    return [p.cropped(hw_min) for p in plans]


def field_of_view_kept(plan: ResizePlan) -> tuple[float, float]:
    """Fractions (vertical, horizontal) of the camera's image that reach the network under ``plan``."""
    (h, w), (rh, rw) = plan.proc_hw, plan.resized_hw
    return h / rh, w / rw


def _resize(img: np.ndarray, hw: tuple[int, int], upscale: bool) -> np.ndarray:
    return cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC if upscale else cv2.INTER_AREA)


def _grows(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return b[0] > a[0] or b[1] > a[1]


def resize_image(rgb: np.ndarray, plan: ResizePlan) -> np.ndarray:
    """Apply ``plan`` to an HxWx3 uint8 RGB image: the network-resolution uint8 image."""
    if rgb.shape[:2] != plan.src_hw:
        raise ValueError(f"image is {rgb.shape[:2]}, plan expects {plan.src_hw}")
    img = np.ascontiguousarray(rgb)
    if plan.bound_hw != plan.src_hw:
        img = _resize(img, plan.bound_hw, _grows(plan.src_hw, plan.bound_hw))
    if plan.resized_hw != plan.bound_hw:
        img = _resize(img, plan.resized_hw, _grows(plan.bound_hw, plan.resized_hw))
    (top, left), (h, w) = plan.crop_tl, plan.proc_hw
    return img[top:top + h, left:left + w]


def normalize(img_proc: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, ImageNet-normalised as torchvision's ToTensor + Normalize.

    The same float32 operations in the same order (divide by 255, subtract the mean, divide by the std), so
    the result equals upstream's tensors bit for bit (test_preprocess checks it) without importing torch.
    """
    x = np.ascontiguousarray(img_proc.transpose(2, 0, 1)).astype(np.float32) / np.float32(255.0)
    return (x - _MEAN) / _STD


def preprocess_batch(images_rgb: list[np.ndarray], process_res: int = 504, method: str = "upper_bound_resize",
                     mixed: str = "crop") -> tuple[np.ndarray, list[ResizePlan], np.ndarray]:
    """N RGB uint8 images -> network input float32 (N, 3, H, W), one plan per view, resized uint8 (N, H, W, 3)."""
    if not images_rgb:
        raise ValueError("at least one image is needed")
    for i, img in enumerate(images_rgb):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"image {i}: expected HxWx3 uint8 RGB, got shape {img.shape} dtype {img.dtype}")
    plans = plan_batch([(img.shape[0], img.shape[1]) for img in images_rgb], process_res, method, mixed)
    resized = np.stack([resize_image(img, p) for img, p in zip(images_rgb, plans)])
    return np.stack([normalize(img) for img in resized]), plans, resized


def K_cam_to_proc(K_cam: np.ndarray, plan: ResizePlan) -> np.ndarray:
    """Camera intrinsics -> intrinsics of the network image (float64)."""
    return plan.A_proc_cam @ np.asarray(K_cam, dtype=np.float64)


def K_proc_to_cam(K_proc: np.ndarray, plan: ResizePlan) -> np.ndarray:
    """Network-image intrinsics -> camera intrinsics (float64); the exact inverse of K_cam_to_proc."""
    return np.linalg.solve(plan.A_proc_cam, np.asarray(K_proc, dtype=np.float64))
