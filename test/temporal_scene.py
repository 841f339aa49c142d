"""An analytic scene for the temporal tests: a textured box seen from inside by pinhole cameras.

Depth, confidence and images are rendered by exact ray casting; a window's "network" returns them in a window
frame and unit of its own (a random similarity of the true world), as DA3 does (each forward its own world
and scale), so the chain must undo exactly what was done.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from da3_ros.core.geometry import R_from_quaternion, invert_T, pinhole_K
from da3_ros.core.prediction import Prediction
from da3_ros.core.temporal.keyframes import WindowLayout
from da3_ros.core.temporal.tracker import TemporalConfig, TemporalStep, TemporalTracker

BOX_LO, BOX_HI = np.array([-4.0, -3.0, -2.0]), np.array([4.0, 3.0, 7.0])
H, W = 48, 64
K = pinhole_K(W, H, 70.0)
STAMP0_NS, PERIOD_NS = 1_700_000_000_123_456_789, 100_000_000  # 10 Hz, a stamp with every ns digit used


def pose(t: np.ndarray | list[float], yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """T_world_cam of an optical camera at ``t``, turned by yaw (about y, down) then pitch (about x)."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    T = np.eye(4)
    T[:3, :3] = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    T[:3, 3] = t
    return T


def trajectory(n: int = 16) -> list[np.ndarray]:
    """The reference camera's true poses: forward along z with a sideways wiggle, turning slowly."""
    return [pose([0.3 * np.sin(0.3 * k), 0.1 * np.cos(0.2 * k) - 0.1, 0.12 * k], 0.05 * k, 0.02 * np.sin(0.4 * k))
            for k in range(n)]


def rays_world(T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    return T_world_cam[:3, 3], rays @ T_world_cam[:3, :3].T


def render_depth(T_world_cam: np.ndarray) -> np.ndarray:
    """True z-depth (H, W) float64 of the box's inside: the nearest wall along each pixel's ray."""
    c, d = rays_world(T_world_cam)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (BOX_HI - c) / d, (BOX_LO - c) / d)
    return np.where(np.isfinite(t) & (t > 0), t, np.inf).min(axis=-1)


def render_image(T_world_cam: np.ndarray, blur: int = 0) -> np.ndarray:
    """(3, H, W) float32 texture of the walls at each pixel's hit point; ``blur`` px of box blur."""
    c, d = rays_world(T_world_cam)
    X = c + d * render_depth(T_world_cam)[..., None]
    g = np.sin(4.1 * X[..., 0]) + np.cos(3.7 * X[..., 1]) + np.sin(5.3 * X[..., 2] + X[..., 0])
    for _ in range(blur):
        g = (g + np.roll(g, 1, 0) + np.roll(g, -1, 0) + np.roll(g, 1, 1) + np.roll(g, -1, 1)) / 5
    return np.stack([g, 0.5 * g, -g]).astype(np.float32)


def confidence(T_world_cam: np.ndarray) -> np.ndarray:
    v, u = np.mgrid[0:H, 0:W]
    return (1.5 + np.sin(u / 5.0) * np.cos(v / 7.0) + 0.1 * T_world_cam[0, 3]).astype(np.float32)


def random_sim3(rng: np.random.Generator) -> np.ndarray:
    """X_window = s R X_true + t: a random similarity (scale 0.3 .. 3)."""
    S = np.eye(4)
    S[:3, :3] = np.exp(rng.uniform(-1.2, 1.2)) * R_from_quaternion(rng.normal(size=4))
    S[:3, 3] = rng.normal(scale=2.0, size=3)
    return S


def network(views_T_world_cam: list[np.ndarray], G: np.ndarray) -> Prediction:
    """The prediction of one window in its own frame and unit ``G`` (window <- true world)."""
    s = float(np.cbrt(np.linalg.det(G[:3, :3])))
    R = G[:3, :3] / s
    T_win_cam = []
    for T in views_T_world_cam:
        Tw = np.eye(4)
        Tw[:3, :3], Tw[:3, 3] = R @ T[:3, :3], s * R @ T[:3, 3] + G[:3, 3]
        T_win_cam.append(Tw)
    depth = np.stack([s * render_depth(T) for T in views_T_world_cam]).astype(np.float32)
    return Prediction(depth, False, np.repeat(K[None], len(views_T_world_cam), 0), "model",
                      np.stack([confidence(T) for T in views_T_world_cam]), None, invert_T(np.stack(T_win_cam)))


Corruption = Callable[[Prediction, WindowLayout, np.random.Generator], Prediction]


@dataclass
class Run:
    """A tracker driven over the scene, and what the scene knows."""

    steps: list[TemporalStep] = field(default_factory=list)
    windows: list[WindowLayout] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)  # window units per true metre, per set
    resets: list[object] = field(default_factory=list)  # Window.reset per set
    true_ref: dict[int, np.ndarray] = field(default_factory=dict)  # the reference camera's true pose by stamp
    tracker: TemporalTracker | None = None


def drive(cfg: TemporalConfig, poses_ref: list[np.ndarray], rig: list[np.ndarray] | None = None,
          metric: bool = False, corrupt: Corruption | None = None, seed: int = 0,
          stamps_ns: list[int] | None = None, run: Run | None = None,
          metres_factor: Callable[[int], float] | None = None) -> Run:
    """Each set as the node would: window -> the scene's network on exactly those views -> update.

    ``metres_factor(stamp)``: the metric source's error on that set (its metres per unit x this; default 1).
    """
    rng = np.random.default_rng(seed)
    rig = rig or [np.eye(4)]
    run = run or Run(tracker=TemporalTracker(cfg))
    assert run.tracker is not None
    true_ref = run.true_ref
    for k, T_ref in enumerate(poses_ref):
        stamp = stamps_ns[k] if stamps_ns is not None else STAMP0_NS + k * PERIOD_NS
        cams = [T_ref @ T_rc for T_rc in rig]
        window = run.tracker.window(np.stack([render_image(T) for T in cams]), stamp)
        views = cams + [true_ref[s] for s in window.layout.keyframe_stamps_ns]
        G = random_sim3(rng)
        pred = network(views, G)
        if corrupt is not None:
            pred = corrupt(pred, window.layout, rng)
        scale = float(np.cbrt(np.linalg.det(G[:3, :3])))
        factor = 1.0 if metres_factor is None else metres_factor(stamp)
        run.steps.append(run.tracker.update(window, pred, factor / scale if metric else None))
        run.windows.append(window.layout)
        run.resets.append(window.reset)
        run.scales.append(scale)
        true_ref[stamp] = T_ref
    return run


def corrupt_pixels(fraction_low: float, fraction_high: float) -> Corruption:
    """Corrupt the depth of random pixels of every reference-camera view.

    Some get a near-zero confidence, some three times the highest (the network sure of a wrong depth).
    """
    def corrupt(pred: Prediction, layout: WindowLayout, rng: np.random.Generator) -> Prediction:
        depth, conf = pred.depth.copy(), pred.confidence.copy()
        for i in [0, *range(layout.n_current, layout.n_views)]:
            bad = rng.random((H, W))
            low, high = bad < fraction_low, (bad >= fraction_low) & (bad < fraction_low + fraction_high)
            factor = np.exp(rng.choice([-1, 1], size=(H, W)) * rng.uniform(0.3, 1.5, size=(H, W))).astype(np.float32)
            depth[i] = np.where(low | high, depth[i] * factor, depth[i])
            conf[i] = np.where(low, 1e-3, np.where(high, 3 * conf.max(), conf[i]))
        return Prediction(depth, pred.is_metric, pred.K_proc, pred.K_source, conf, None, pred.T_cam_world)
    return corrupt
