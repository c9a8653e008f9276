"""Export trained speechllm models to formats that existing engines serve without speechllm.

ultravox.py          `export_ultravox`: a Hugging Face Ultravox folder that vLLM serves (what maps onto it, and
                     `export_blockers` saying what does not)
ultravox_import.py   `load_ultravox`: such a folder back into speechllm (round trip)
ultravox_processing.py  the processor copied into each exported folder (runs without speechllm)
gguf.py              `export_gguf`: model.gguf + mmproj.gguf for llama.cpp, by llama.cpp's own converter
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError
from .gguf import check_gguf_exportable, export_gguf, gguf_blockers
from .ultravox import check_exportable, export_blockers, export_ultravox
from .ultravox_import import load_ultravox

# format -> (writer, check of a spec alone, so a refusal costs no model load)
EXPORT_FORMATS = {"ultravox-hf": (export_ultravox, check_exportable), "gguf": (export_gguf, check_gguf_exportable)}


def export_model(model_or_path, out, format: str = "ultravox-hf", **options) -> Path:
    """Write a model (a loaded speechllm model, a saved folder or a packaged name) to `out` in `format`; LoRA
    adapters are merged first. `options` go to the format's writer (gguf: `llama_cpp`, the llama.cpp checkout).
    ConfigError for an unknown format or a model the format cannot hold."""
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {format!r}; known: {sorted(EXPORT_FORMATS)}")
    write, check = EXPORT_FORMATS[format]
    if isinstance(model_or_path, (str, Path)):
        from ..models import load
        from ..models.configuration import SpeechLLMConfig
        from ..models.packaged import packaged_model_path, packaged_name

        packaged = packaged_name(model_or_path)
        folder = packaged_model_path(packaged) if packaged else model_or_path
        if Path(folder).is_dir():
            check(SpeechLLMConfig.from_pretrained(folder).model_spec)
        model = load(folder, device="cpu", dtype=torch.float32)
    else:
        model = model_or_path.merge_adapters_in_place()
    return write(model, out, **options)


__all__ = ["EXPORT_FORMATS", "check_exportable", "check_gguf_exportable", "export_blockers", "export_gguf",
           "export_model", "export_ultravox", "gguf_blockers", "load_ultravox"]
