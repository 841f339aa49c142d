"""The graph's interface, shared by every backend and the export: input names, output names, example feeds."""
from __future__ import annotations

import numpy as np

from da3_ros.models.registry import DepthKind, Variant

IN_IMAGES, IN_EXTRINSICS, IN_INTRINSICS = "images", "extrinsics", "intrinsics"


def feeds_shape(feeds: dict[str, np.ndarray]) -> tuple[int, tuple[int, int], bool]:
    """The rig shape of graph feeds: (views, network (H, W), pose-conditioned)."""
    images = feeds[IN_IMAGES]
    return int(images.shape[1]), (int(images.shape[3]), int(images.shape[4])), IN_EXTRINSICS in feeds


def describe_shape(shape: tuple[int, tuple[int, int], bool]) -> str:
    """A rig shape in words: view count, network size (WxH), pose-conditioned or plain (node, serve, errors)."""
    n, (h, w), conditioned = shape
    return f"{n} view(s) at {w}x{h}, {'pose-conditioned' if conditioned else 'plain'}"


def graph_outputs(variant: Variant) -> list[str]:
    """The outputs an exported graph of ``variant`` has, in order (= engines.graph.output_names of its network)."""
    if variant.depth_kind is DepthKind.METRIC and variant.has_pose:  # nested: any-view + metric branch
        return ["depth", "depth_conf", "extrinsics_out", "intrinsics_out", "metric_depth", "sky"]
    if variant.has_pose:
        return ["depth", "depth_conf", "extrinsics_out", "intrinsics_out"]
    return ["depth", "sky"]


def example_inputs(n_views: int, hw: tuple[int, int], conditioned: bool) -> dict[str, np.ndarray]:
    """Fixed, plausible graph inputs, for tracing and the TensorRT parity gate.

    Seeded N(0, 1) images like normalised ones; when conditioned, a rig along +x at unit median distance from
    view 0 (as the engine normalises poses) seen through a 60° camera.
    """
    rng = np.random.default_rng(0)
    feeds = {IN_IMAGES: rng.standard_normal((1, n_views, 3, *hw)).astype(np.float32)}
    if conditioned:
        T = np.tile(np.eye(4, dtype=np.float32), (1, n_views, 1, 1))
        unit = float(np.median(np.arange(1, n_views))) if n_views > 1 else 1.0
        T[0, :, 0, 3] = -np.arange(n_views, dtype=np.float32) / unit  # world-to-camera: cameras along +x
        f = 0.5 * hw[1] / np.tan(np.radians(30.0))
        K = np.array([[f, 0, hw[1] / 2], [0, f, hw[0] / 2], [0, 0, 1]], dtype=np.float32)
        feeds[IN_EXTRINSICS], feeds[IN_INTRINSICS] = T, np.tile(K, (1, n_views, 1, 1))
    return feeds
