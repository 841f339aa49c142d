"""What this CPU can do, from its x86 flags: the int8 kernels' exactness, bf16, and AVX-512 (backend auto)."""
from __future__ import annotations

import functools
import platform
from pathlib import Path

# x86 flags (as /proc/cpuinfo spells them) of an int8 dot product that accumulates u8 x s8 pairs in int32
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


X86 = ("x86_64", "amd64", "i686", "x86")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """/proc/cpuinfo's text, read once; "" where it cannot be read (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpuinfo_field(name: str) -> str | None:
    """The first value of ``name`` in /proc/cpuinfo (``model name``, ``flags``); None where it is absent."""
    return next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines()
                 if line.split(":", 1)[0].strip() == name and ":" in line), None)


def cpu_model() -> str:
    """The CPU's model name ("unknown" where it cannot be read): keys what is compiled per CPU."""
    return cpuinfo_field("model name") or "unknown"


def x86_flags() -> tuple[str, ...] | None:
    """The CPU's flags as /proc/cpuinfo spells them; None off x86 or where they cannot be read (not Linux)."""
    if platform.machine().lower() not in X86 or not _cpuinfo():
        return None
    return tuple((cpuinfo_field("flags") or "").split())


def x86_without_vnni() -> bool:
    """True on an x86 CPU without VNNI/AMX (AVX2's ``vpmaddubsw`` only).

    There ONNX Runtime's u8 x s8 MatMul kernels add pairs of products in int16, which saturates for full-range
    8-bit weights (a depth correlation of 0.9964 against fp32 measured on an AMD EPYC without VNNI, against
    0.99997 on a VNNI CPU); 7-bit weights cannot saturate. ARM's kernels (sdot/udot) have no such limit.
    """
    flags = x86_flags()
    return flags is not None and not any(f in flags for f in VNNI_FLAGS)  # None: cannot tell, full range


def int8_weight_bits() -> int:
    """Bits of the int8 graph's weights on this CPU: 7 on x86 without VNNI (see ``x86_without_vnni``), else 8."""
    return 7 if x86_without_vnni() else 8


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags of native bf16 dot products (OpenVINO's bf16 CPU kernels)


def cpu_has_bf16() -> bool:
    """True on an x86 CPU with AVX512-BF16 or AMX-BF16: where OpenVINO's bf16 inference hint runs natively."""
    flags = x86_flags()
    return flags is not None and any(f in flags for f in BF16_FLAGS)


# AVX-512 as oneDNN's "avx512_core" needs it (F, BW, DQ, VL): OpenVINO's fast CPU kernels (backend auto's rule)
AVX512_FLAGS = ("avx512f", "avx512bw", "avx512dq", "avx512vl")


def cpu_has_avx512() -> bool:
    """True on an x86 CPU with AVX-512 F/BW/DQ/VL, where OpenVINO was measured faster than ONNX Runtime.

    da3-small at 504x280, 2 threads, on an AMD EPYC with AVX-512: OpenVINO fp32 0.70x ONNX Runtime's forward
    (126 against 179 ms), bf16 0.49x; the same OpenVINO held to AVX2 (oneDNN's ISA cap) took 1.07x ONNX
    Runtime's AVX-512 forward, so on an AVX2-only CPU ONNX Runtime stays the choice (BENCHMARKS.md).
    """
    flags = x86_flags()
    return flags is not None and all(f in flags for f in AVX512_FLAGS)
