"""Offline readers and converters for other projects' checkpoints (see whisper.py, gguf.py, ctranslate2.py), and the
names specs use for them (names.py: `packaged:tiny.en`, `packaged:gemma-3-270m`, `gguf:/path/to/file.gguf`)."""

from speechllm.pretrained.ctranslate2 import CT2Model, read_ct2_model
from speechllm.pretrained.gemma import GEMMA_CHAT_TEMPLATE, GEMMA_NOTICE
from speechllm.pretrained.gguf import PACKAGED_GGUF, convert_gguf, gemma_notice_files, gguf_path, packaged_gguf_path
from speechllm.pretrained.names import resolve_name_or_path
from speechllm.pretrained.packages import cache_dir
from speechllm.pretrained.precision import cpu_has_native_bf16, preferred_cpu_dtype
from speechllm.pretrained.whisper import (
    PACKAGED_WHISPER,
    export_packaged_whisper,
    load_packaged_whisper,
    packaged_whisper_path,
)

__all__ = [
    "CT2Model",
    "GEMMA_CHAT_TEMPLATE",
    "GEMMA_NOTICE",
    "PACKAGED_GGUF",
    "PACKAGED_WHISPER",
    "cache_dir",
    "convert_gguf",
    "cpu_has_native_bf16",
    "export_packaged_whisper",
    "gemma_notice_files",
    "gguf_path",
    "load_packaged_whisper",
    "packaged_gguf_path",
    "packaged_whisper_path",
    "preferred_cpu_dtype",
    "read_ct2_model",
    "resolve_name_or_path",
]
