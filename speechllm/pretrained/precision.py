"""Which float type a CPU runs fastest: bf16 only where the CPU multiplies bf16 natively.

Measured here: a CPU with avx512_bf16 ran 2048x2048 matmuls about 4x faster in bf16 than fp32, while an AMD EPYC
without it ran a bf16 convolution 28x slower than fp32 (the bf16 kernels are emulated). So the choice follows the
CPU's feature flags, read once, not a guess from the architecture's name.
"""

import functools
import platform
import subprocess
from pathlib import Path

import torch

# x86: AVX512-BF16 (Cooper Lake, Zen 4 and later) and AMX (Sapphire Rapids and later); Arm: the FEAT_BF16 extension.
_X86_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
_ARM_BF16_FEATURE = "bf16"


def native_bf16_in_cpuinfo(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo text lists a native bf16 matmul: an x86 `flags` line with avx512_bf16 or amx_bf16, or
    an Arm `Features` line with bf16. Every processor must have it (one line per logical CPU)."""
    lines = [line.partition(":") for line in cpuinfo.splitlines()]
    x86 = [set(value.split()) for key, _, value in lines if key.strip() == "flags"]
    arm = [set(value.split()) for key, _, value in lines if key.strip() == "Features"]
    if x86:
        return all(flags & _X86_BF16_FLAGS for flags in x86)
    if arm:
        return all(_ARM_BF16_FEATURE in features for features in arm)
    return False


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this machine's CPU multiplies bf16 natively (read once from /proc/cpuinfo on Linux, sysctl on macOS;
    False wherever it cannot be told)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        return native_bf16_in_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    if platform.system() == "Darwin":
        try:
            answer = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return answer.stdout.strip() == "1"
    return False


def preferred_cpu_dtype() -> torch.dtype:
    """torch.bfloat16 where this CPU multiplies bf16 natively, else torch.float32."""
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
