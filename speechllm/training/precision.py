"""Which precision a run trains in on this machine."""

from __future__ import annotations

import logging
import os

import torch

from ..pretrained import precision as cpu_support

logger = logging.getLogger(__name__)


def resolve_precision(requested: str) -> str:
    """The precision to train in: "auto" is bf16 on a GPU that has it or on a CPU that multiplies bf16 natively
    (accelerate then runs the steps under CPU autocast: weights and optimiser states stay fp32), else fp32; half
    precision asked for on a CPU without native support for it falls back to fp32, saying so."""
    gpu = torch.cuda.is_available()
    if requested == "auto":
        if gpu:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_support.cpu_has_native_bf16() else "fp32"
    if requested != "fp32" and not gpu and not (requested == "bf16" and cpu_support.cpu_has_native_bf16()):
        # Emulated half precision on a CPU is no saving: a bf16 convolution ran 28x slower than fp32 on an AMD
        # EPYC without avx512_bf16. The recipe's numbers stay the same; only the arithmetic changes.
        logger.warning(f"precision {requested}: this CPU has no native support for it; training in fp32")
        return "fp32"
    return requested


def forget_other_precision(mixed_precision: str) -> None:
    """Let a second run in the same single-process Python session train in another precision: accelerate keeps
    one process-wide state and refuses a different `mixed_precision` ("restart your runtime"). In one process
    nothing else shares that state, so it is dropped and rebuilt; under a distributed launch it is left alone."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and int(os.environ.get("WORLD_SIZE", "1")) == 1 and shared.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state()
