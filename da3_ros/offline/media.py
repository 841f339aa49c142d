"""``da3-ros media``: videos and image folders as the cameras of a rig, through the node's core.

Frame k of every source forms set k (a video is read frame by frame, a folder in sorted file-name order); the
shortest source ends the run. Each camera may have a camera_info YAML in the ROS calibration format
(camera_calibration_parsers: image_width, image_height, camera_matrix, distortion_model,
distortion_coefficients, ...). Per set, in the output folder: ``set_<k>.npz`` (depth, confidence, poses,
intrinsics), ``set_<k>_<camera>.png`` (image | depth | confidence) and ``set_<k>_fused.ply``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from da3_ros.core.geometry import intrinsics_problem
from da3_ros.core.image_io import bgr_to_rgb, read_rgb
from da3_ros.core.processor import Calibration, CameraFrame, Dropped
from da3_ros.offline.setup import OfflineSetup, TrajectoryFile
from da3_ros.offline.ply import write_ply
from da3_ros.offline.visualize import depth_panel

_LOG = logging.getLogger("da3_ros.offline.media")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class MediaError(ValueError):
    """A source or calibration file that cannot be used."""


@dataclass(frozen=True)
class Source:
    """One camera: a video file or a folder of images."""

    name: str
    kind: str  # "video" or "images"
    path: Path

    def frames(self) -> Iterator[np.ndarray]:
        """RGB frames in order."""
        if self.kind == "video":
            cap = cv2.VideoCapture(str(self.path))
            if not cap.isOpened():
                raise MediaError(f"cannot open video {str(self.path)!r}")
            try:
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        return
                    yield bgr_to_rgb(bgr)
            finally:
                cap.release()
        for f in image_files(self.path):
            try:
                yield read_rgb(f)
            except FileNotFoundError as exc:
                raise MediaError(str(exc)) from None

    def fps(self) -> float | None:
        if self.kind != "video":
            return None
        cap = cv2.VideoCapture(str(self.path))
        fps = cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        return float(fps) if fps and fps > 0 else None


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name."""
    if not folder.is_dir():
        raise MediaError(f"--images wants a folder of images, {str(folder)!r} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {str(folder)!r}")
    return files


def parse_sources(videos: list[str], folders: list[str]) -> list[Source]:
    """``[NAME=]PATH`` arguments -> sources (default name: the file stem / folder name), names unique."""
    sources = []
    for kind, specs in (("video", videos), ("images", folders)):
        for spec in specs:
            name, sep, path = spec.partition("=")
            if not sep:
                name, path = Path(spec).stem or Path(spec).name, spec
            p = Path(path)
            if kind == "video" and not p.is_file():
                raise MediaError(f"--video {spec!r}: no such file")
            sources.append(Source(name, kind, p))
    names = [s.name for s in sources]
    if not sources or len(set(names)) != len(names):
        raise MediaError(f"give one or more --video/--images with unique camera names (NAME=PATH), got {names}")
    return sources


def read_calibration(path: str | Path) -> Calibration:
    """A ROS calibration YAML (camera_calibration_parsers' format) -> the camera's Calibration."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
        w, h = int(doc["image_width"]), int(doc["image_height"])
        K = np.array(doc["camera_matrix"]["data"], np.float64).reshape(3, 3)
        model = str(doc.get("distortion_model", "plumb_bob"))
        D = tuple(float(v) for v in doc.get("distortion_coefficients", {}).get("data", []))
    except OSError as exc:
        raise MediaError(f"cannot read camera_info YAML {str(path)!r}: {exc.strerror}") from None
    except (KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError) as exc:
        raise MediaError(f"{str(path)!r} is not a ROS calibration YAML (image_width, image_height, "
                         f"camera_matrix.data with 9 numbers, ...): {type(exc).__name__}: {exc}") from None
    problem = intrinsics_problem(K)
    if problem:
        raise MediaError(f"camera_info YAML {str(path)!r} has {problem}")
    return Calibration(K, (h, w), model, D)


def run_media(sources: list[Source], calibrations: dict[str, str], out_dir: Path, values: dict,
              every_n: int = 1, start_s: float = 0.0, duration_s: float = 0.0, rate_hz: float = 10.0,
              trajectory: str | Path | None = None) -> dict:
    """Process the sources as a rig; returns counts and per-stage times (also printed by the CLI).

    With ``temporal.keyframes`` > 0 every set joins the window chain, in order, and the reference camera's
    odometry goes to ``trajectory`` (default ``<out_dir>/trajectory.tum``) and into each set's npz.
    """
    unknown = sorted(set(calibrations) - {s.name for s in sources})
    if unknown:
        raise MediaError(f"--camera-info for {unknown}, which are not cameras {[s.name for s in sources]}")
    if every_n < 1:
        raise MediaError(f"--every-n must be >= 1, got {every_n}")
    values = dict(values, camera_names=[s.name for s in sources])
    infos = [read_calibration(calibrations[s.name]) if s.name in calibrations else None for s in sources]
    fps = next((f for f in (s.fps() for s in sources) if f), None) or rate_hz
    setup = OfflineSetup(values, _LOG)
    track = None
    if trajectory is not None or setup.config.temporal is not None:
        track = TrajectoryFile(trajectory or out_dir / "trajectory.tum", setup.config)  # before the model loads
    setup.load()
    label = setup.rig.engine.label
    out_dir.mkdir(parents=True, exist_ok=True)
    first, last = int(round(start_s * fps)), int(round((start_s + duration_s) * fps)) if duration_s else None
    stats: dict = {"sets": 0, "views": 0, "dropped": {}, "stage_s": {}, "wall_s": 0.0}
    t_start = time.perf_counter()
    streams = [s.frames() for s in sources]
    for k, frames in enumerate(zip(*streams)):
        if last is not None and k >= last:
            break
        if k < first or (k - first) % every_n:
            setup.frames.skipped(int(round(k / fps * 1e9)))  # not silence: no gap for the temporal window
            continue
        stamp_ns = int(round(k / fps * 1e9))
        for cal, rgb, s in zip(infos, frames, sources):
            if cal is not None and cal.hw != rgb.shape[:2]:
                raise MediaError(f"camera_info of {s.name!r} is {cal.hw[1]}x{cal.hw[0]}, its frames are "
                                 f"{rgb.shape[1]}x{rgb.shape[0]}: calibrate at the frames' size")
        done = setup.frames.process([CameraFrame(np.ascontiguousarray(rgb), stamp_ns, f"{s.name}_optical_frame", cal)
                                     for rgb, s, cal in zip(frames, sources, infos)])
        if isinstance(done, Dropped):
            stats["dropped"][done.reason.value] = stats["dropped"].get(done.reason.value, 0) + 1
            _LOG.warning("set %d dropped: %s", k, done.detail)
            continue
        t0 = time.perf_counter()
        _write_set(out_dir / f"set_{k:06d}", done.outputs, [s.name for s in sources], k, label)
        if track is not None:
            track.record(done.outputs)
        stats["sets"] += 1
        stats["views"] += len(sources)
        for name, sec in {**done.timing_s, "write": time.perf_counter() - t0}.items():
            stats["stage_s"].setdefault(name, []).append(sec)
        print(f"[media] set {k}: {len(sources)} views -> {out_dir / f'set_{k:06d}'}.*  "
              f"(forward {done.timing_s.get('forward', float('nan')):.2f} s)", flush=True)
    stats["wall_s"] = time.perf_counter() - t_start
    if track is not None:
        track.close()
        stats["trajectory"], stats["trajectory_poses"] = track.path, track.poses
    return stats


def _write_set(stem: Path, out, names: list[str], k: int, label: str) -> None:
    pred = out.pred
    arrays = {"depth": out.depth_arrays, "camera_names": np.array(names), "frame_index": k,
              "stamp_ns": np.array(out.stamps_ns), "is_metric": pred.is_metric,
              "model": label}
    for key, value in (("confidence", pred.confidence), ("sky_mask", pred.sky_mask), ("K_proc", pred.K_proc),
                       ("T_ref_cam", out.result.T_ref_cam), ("depth_scale", pred.depth_scale)):
        if value is not None:
            arrays[key] = value
    odom = out.odometry()
    if odom is not None:  # the temporal window: the reference camera on the chain (frame odom.frame)
        arrays.update(T_odom_ref=odom.T_odom_cam, odom_covariance=odom.covariance, odom_is_metric=odom.is_metric)
    np.savez_compressed(f"{stem}.npz", **arrays)
    units = "m" if pred.is_metric else "relative"
    for i, name in enumerate(names):
        conf = None if pred.confidence is None else pred.confidence[i]
        panel = depth_panel(pred.rgb_proc[i], pred.depth[i], conf, f"{label} | {name} | image | depth ({units}) | "
                            "confidence")
        cv2.imwrite(f"{stem}_{name}.png", panel)
    fused = out.fused_arrays()
    if fused is not None:
        frame, pts, rgb, _ = fused
        write_ply(f"{stem}_fused.ply", pts, rgb, comment=f"da3_ros fused cloud, frame {frame}, model {label}")


def cmd_media(args) -> int:
    """``da3-ros media``: videos / image folders in, npz + PNG + PLY per set out."""
    from da3_ros.offline.setup import ParamFileError, load_values

    try:
        values = load_values(args.params_file, args.param, _LOG)
        for name in ("model", "backend"):
            if getattr(args, name):
                values[name] = getattr(args, name)
        sources = parse_sources(args.video, args.images)
        calibrations = {}
        for spec in args.camera_info:
            name, sep, path = spec.partition("=")
            if not sep:
                raise MediaError(f"--camera-info wants NAME=calibration.yaml, got {spec!r}")
            calibrations[name] = path
        stats = run_media(sources, calibrations, Path(args.out), values, args.every_n, args.start, args.duration,
                          args.rate_hz, args.trajectory)
    except (MediaError, ParamFileError, ValueError) as exc:  # ValueError: the node's parameter checks
        raise SystemExit(f"da3-ros media: {exc}") from None
    n, wall = stats["sets"], stats["wall_s"]
    print(f"[media] {n} sets, {stats['views']} views in {wall:.1f} s ({n / wall if wall else 0:.2f} sets/s); "
          f"dropped {stats['dropped'] or 0}")
    for name, secs in stats["stage_s"].items():
        print(f"  stage {name:<12} mean {1e3 * float(np.mean(secs)):8.1f} ms")
    if "trajectory" in stats:
        print(f"[media] trajectory ({stats['trajectory_poses']} poses, TUM): {stats['trajectory']}")
    print(f"[media] wrote {args.out}")
    return 0
