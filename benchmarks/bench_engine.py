"""Engine benchmark: da3_ros vs upstream DA3 on the same weights and images, measured in the same run.

Prints a table of seconds per set (median of --repeats) and views/s for N = 1..len(--views) views:
  upstream API   : depth_anything_3.api.DepthAnything3.inference as shipped (autocasts fp16 even on CPU)
  da3_ros 1 fwd  : TorchEngine, ONE forward over all N views (what the node does)
  da3_ros N fwd  : TorchEngine, one forward per view (what one-process-per-camera wrappers do)
Run: source scripts/env.sh && python benchmarks/bench_engine.py --model random:da3-small --views 1,2,3
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _read(path: Path) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _upstream_api(model):
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:  # no CPU torchvision on PyPI: the three transforms upstream needs (test/shims/README.md)
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        sys.path.insert(0, str(REPO / "test" / "shims"))
    from depth_anything_3.api import DepthAnything3

    api = DepthAnything3(model_name=model.variant.name)
    api.model.load_state_dict(model.net.state_dict())
    return api.eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="random:da3-small")
    p.add_argument("--views", default="1,2,3")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--examples", default=str(REPO.parent / "shared" / "data" / "da3_examples"))
    args = p.parse_args()

    from da3_ros.engines import FrameBatch, TorchEngine
    from da3_ros.models import load_model

    ex = Path(args.examples)
    pool = [_read(ex / "SOH_000.png"), _read(ex / "SOH_010.png")]
    import cv2

    cap = cv2.VideoCapture(str(ex / "robot_unitree.mp4"))
    ok, frame = cap.read()
    pool.append(np.ascontiguousarray(frame[:, :, ::-1]))
    model = load_model(args.model)
    engine = TorchEngine(model)
    api = _upstream_api(model)
    print(f"# {model.label} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
          f"{platform.processor() or platform.machine()} | process_res 504")
    print("| views | upstream API s/set | da3_ros 1 fwd s/set | da3_ros N fwd s/set | da3_ros views/s | "
          "speed-up vs upstream | speed-up vs N fwd |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(v) for v in args.views.split(",")):
        images = [pool[i % len(pool)] for i in range(n)]
        t_up = _time(lambda: api.inference(images, process_res=504), args.repeats)
        t_one = _time(lambda: engine.infer(FrameBatch(images)), args.repeats)
        t_each = _time(lambda: [engine.infer(FrameBatch([im])) for im in images], args.repeats)
        print(f"| {n} | {t_up:.2f} | {t_one:.2f} | {t_each:.2f} | {n / t_one:.2f} | {t_up / t_one:.2f}x | "
              f"{t_each / t_one:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
