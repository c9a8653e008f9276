"""Offline readers and converters for other projects' checkpoints (see whisper.py, ctranslate2.py)."""

from speechllm.pretrained.ctranslate2 import CT2Model, read_ct2_model
from speechllm.pretrained.whisper import (
    PACKAGED_WHISPER,
    export_packaged_whisper,
    load_packaged_whisper,
    packaged_whisper_path,
    resolve_name_or_path,
)

__all__ = [
    "CT2Model",
    "PACKAGED_WHISPER",
    "export_packaged_whisper",
    "load_packaged_whisper",
    "packaged_whisper_path",
    "read_ct2_model",
    "resolve_name_or_path",
]
