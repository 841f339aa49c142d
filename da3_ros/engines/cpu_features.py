"""What this CPU's int8 kernels can do exactly: one fact, read by the int8 export and by the graph cache key."""
from __future__ import annotations

import functools
import platform
from pathlib import Path

# x86 flags (as /proc/cpuinfo spells them) of an int8 dot product that accumulates u8 x s8 pairs in int32
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.lru_cache(maxsize=1)
def x86_without_vnni() -> bool:
    """True on an x86 CPU without VNNI/AMX (AVX2's ``vpmaddubsw`` only).

    There ONNX Runtime's u8 x s8 MatMul kernels add pairs of products in int16, which saturates for full-range
    8-bit weights (a depth correlation of 0.9964 against fp32 measured on an AMD EPYC without VNNI, against
    0.99997 on a VNNI CPU); 7-bit weights cannot saturate. ARM's kernels (sdot/udot) have no such limit.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False  # cannot tell (not Linux): full range, as ONNX Runtime's default
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return not any(f in flags for f in VNNI_FLAGS)


def int8_weight_bits() -> int:
    """Bits of the int8 graph's weights on this CPU: 7 on x86 without VNNI (see ``x86_without_vnni``), else 8."""
    return 7 if x86_without_vnni() else 8


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags of native bf16 dot products (OpenVINO's bf16 CPU kernels)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True on an x86 CPU with AVX512-BF16 or AMX-BF16: where OpenVINO's bf16 inference hint runs natively."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in BF16_FLAGS)
