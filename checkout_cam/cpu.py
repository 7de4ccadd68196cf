"""What the CPU can do: the instruction sets that decide how fast (and how) the model runs.

Read from /proc/cpuinfo (Linux), no dependencies, so ``doctor``, the bench and
the model layer all agree. int8 speed and numerics depend on VNNI (without it,
x86's int8 dot products sum pairs into saturating int16, which is why int8
activations are quantized to 7 bits there); bf16 and AMX open faster fp32
alternatives. Figures from different machines are only comparable with these
named beside them.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# Short name -> the /proc/cpuinfo flags that mean it (any of them), in print order.
ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "fma": ("fma",),
    "avx512f": ("avx512f",),
    "avx512bw": ("avx512bw",),
    "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "amx_bf16": ("amx_bf16",),
    "amx_int8": ("amx_int8",),
}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: int

    @property
    def isa(self) -> list[str]:
        """The speed-relevant instruction sets this CPU has, in a fixed order (the bench's ``cpu_isa``)."""
        return [name for name, aliases in ISA_FLAGS.items() if any(a in self.flags for a in aliases)]

    @property
    def vnni(self) -> bool:
        """int8 dot products accumulate into int32 (no int16 saturation): full 8-bit activations are safe."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    @property
    def bf16(self) -> bool:
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def amx(self) -> bool:
        return bool({"amx_int8", "amx_bf16"} & self.flags)

    def describe(self) -> str:
        """One line for logs and the bench header: model, cores, instruction sets."""
        return f"{self.model}, {self.cores} cores, {' '.join(self.isa) or 'no AVX2'}"


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and flags (all cores of one machine report the same)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / ARM
            flags = frozenset(value.split())
    return CpuInfo(model or platform.processor() or "unknown CPU", flags, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU. Off Linux (no /proc/cpuinfo) the flags are empty: nothing is assumed."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text)
