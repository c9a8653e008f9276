"""Export trained speechllm models to formats that existing engines serve without speechllm.

ultravox.py          `export_ultravox`: a Hugging Face Ultravox folder that vLLM serves (what maps onto it, and
                     `export_blockers` saying what does not)
ultravox_import.py   `load_ultravox`: such a folder back into speechllm (round trip)
ultravox_processing.py  the processor copied into each exported folder (runs without speechllm)
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError
from .ultravox import check_exportable, export_blockers, export_ultravox
from .ultravox_import import load_ultravox

EXPORT_FORMATS = {"ultravox-hf": export_ultravox}


def export_model(model_or_path, out, format: str = "ultravox-hf") -> Path:
    """Write a model (a loaded speechllm model, a saved folder or a packaged name) to `out` in `format`; LoRA
    adapters are merged first. ConfigError for an unknown format or a model the format cannot hold."""
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {format!r}; known: {sorted(EXPORT_FORMATS)}")
    if isinstance(model_or_path, (str, Path)):
        from ..models import load
        from ..models.configuration import SpeechLLMConfig
        from ..models.packaged import packaged_model_path, packaged_name

        packaged = packaged_name(model_or_path)
        folder = packaged_model_path(packaged) if packaged else model_or_path
        if Path(folder).is_dir():  # from config.json alone: a refusal costs no model load
            check_exportable(SpeechLLMConfig.from_pretrained(folder).model_spec)
        model = load(folder, device="cpu", dtype=torch.float32)
    else:
        model = model_or_path.merge_adapters_in_place()
    return EXPORT_FORMATS[format](model, out)


__all__ = ["EXPORT_FORMATS", "check_exportable", "export_blockers", "export_model", "export_ultravox",
           "load_ultravox"]
