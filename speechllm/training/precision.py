"""Which precision a run trains in on this machine."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo (Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str) -> str:
    """The precision to train in: "auto" is bf16 on a GPU that has it, else fp32; half precision asked for on a
    CPU without native support for it falls back to fp32, saying so."""
    if requested == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if requested != "fp32" and not torch.cuda.is_available() and not (requested == "bf16" and cpu_has_bf16()):
        # Emulated half precision on a CPU is no saving: a bf16 convolution ran 28x slower than fp32 on an AMD
        # EPYC without avx512_bf16. The recipe's numbers stay the same; only the arithmetic changes.
        logger.warning(f"precision {requested}: this CPU has no native support for it; training in fp32")
        return "fp32"
    return requested
