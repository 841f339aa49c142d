"""``depth_node`` with TensorRT 10.3 stood in (``trt_standin``): its parity gate refuses, as on JetPack 6.

Started as a process by test_trt_refusal.py; everything but TensorRT's own four calls is the real node.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trt_standin  # noqa: E402


class _Patch:
    """What ``install`` needs of pytest's monkeypatch, for a process that ends with the test."""

    @staticmethod
    def setattr(target, name, value) -> None:
        setattr(target, name, value)


if __name__ == "__main__":
    trt_standin.install(_Patch(), depth_scale=float(sys.argv.pop(1)))
    from da3_ros.ros.node import main

    sys.exit(main())
