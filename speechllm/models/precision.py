"""Which float type each part of a loaded model computes in, chosen per part where the device gives a choice.

On a CPU that multiplies bf16 natively (pretrained/precision.py) the LLM runs in bf16: it is matmul-bound (Gemma's
262k-vocabulary output layer alone is most of a decoding step). The encoder and the connector stay fp32: Whisper's
convolution front end gains nothing from bf16 on a CPU, and connectors are small and feed the LLM one cast. A CUDA
GPU with bf16 runs every part in it; anything else runs in fp32. The model casts at each boundary (modeling.py).
"""

from __future__ import annotations

import logging

import torch

from ..pretrained import precision as cpu_support

logger = logging.getLogger(__name__)

PRECISIONS = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16}


def precision_dtype(name: str) -> torch.dtype | None:
    """The dtype a `--precision` choice forces (None for "auto": chosen per part)."""
    return PRECISIONS[name]


def pick_device(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """The device ("auto": CUDA where present, else the CPU) and the dtype its matmul-bound parts run fastest in:
    bf16 on CUDA with bf16 or on a CPU that multiplies it natively, else fp32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return device, cpu_support.preferred_cpu_dtype()


def part_dtypes(model, device: torch.device, fast: torch.dtype,
                dtype: torch.dtype | None = None) -> dict[str, tuple[torch.dtype, str]]:
    """{"encoder" | "connector" | "llm": (dtype, why)} for `model` on `device`, whose matmuls run fastest in `fast`
    (see `pick_device`); `dtype` forces one for every part."""
    if dtype is not None:
        return {part: (dtype, "forced") for part in ("encoder", "connector", "llm")}
    if device.type != "cpu" or fast == torch.float32:
        why = "fastest on this device" if fast != torch.float32 else "no native bf16 on this device"
        return {part: (fast, why) for part in ("encoder", "connector", "llm")}
    if model.config.model_spec.llm.cpu_precision == "fp32":
        why = "llm.cpu_precision: fp32 (bf16 changed this model's answers)"
        return {part: (torch.float32, why) for part in ("encoder", "connector", "llm")}
    return {"encoder": (torch.float32, "convolutions and small matmuls: no gain from bf16 on a CPU"),
            "connector": (torch.float32, "small; cast to the LLM's dtype at its output"),
            "llm": (fast, "matmul-bound; this CPU multiplies bf16 natively")}


def place(model, device: str = "auto", dtype: torch.dtype | None = None):
    """Move `model` to `device` with each part in the dtype `part_dtypes` picks, log the choice once, and return
    it."""
    device, fast = pick_device(device)
    parts = part_dtypes(model, device, fast, dtype)
    model.to(device)
    for part, module in (("encoder", model.encoder), ("connector", model.connector), ("llm", model.language_model)):
        module.to(parts[part][0])
    logger.info("precision on %s: %s", device,
                "; ".join(f"{part} {str(d).removeprefix('torch.')} ({why})" for part, (d, why) in parts.items()))
    return model
