"""What this host's CPU offers: physical cores (the thread default) and the SIMD features that
decide int8 speed and whether a variant's int8 kernels are exact here."""
from __future__ import annotations

import os
import platform
from pathlib import Path

# Flags recorded beside every speed (AMX, VNNI, AVX-512, AVX2; Arm's dot product).
RECORDED = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
            "amx_bf16", "asimddp")
# Hosts whose u8 x s8 int8 kernels accumulate in 32 bits. x86 without VNNI (AVX2 alone)
# adds pairs of products in saturating 16-bit lanes, so 8-bit weights overflow there.
REQUIREMENTS = {"vnni": ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")}


def physical_cores() -> int:
    """Physical cores this process may use: hyperthreads slow ORT's matmuls down."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = set()
    try:
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not line.strip():
                    if core is not None:
                        cores.add((phys, core))
                    phys = core = None
    except OSError:
        pass
    n = len(cores) or os.cpu_count() or 1
    return max(1, min(n, allowed) if allowed else n)


def _host_flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


def cpu_flags() -> str:
    """The CPU's SIMD features that decide int8 and bf16 speed (the machine's name where
    /proc/cpuinfo cannot be read)."""
    flags = _host_flags()
    if not flags:
        return platform.machine()
    return " ".join(f for f in RECORDED if f in flags)


def meets(requirement: str, flags: str | None = None) -> bool:
    """Whether the host (or the space-separated `flags`) has a feature of `requirement`
    ("" always holds). Unknown requirements never hold: a newer export's demand is refused,
    not guessed at."""
    if not requirement:
        return True
    have = set((cpu_flags() if flags is None else flags).split())
    return any(f in have for f in REQUIREMENTS.get(requirement, ()))
