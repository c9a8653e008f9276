"""Asking a model about audio.

`api`: chat, transcribe, ask, summarize, generate_meta (what the model's methods call; ask, summarize and transcribe
word requests in the model's prompt style) and the one constrained metadata generate
the server shares (`metadata_batch`). `batch`: what `speechllm infer` runs over files, folders and manifests
(`collect_inputs`, `infer_clips`, `split_model_argument`, `write_json_lines`). Nothing here imports the
training-data layer.
"""

from .api import ask, chat, check_instruction, check_positive, generate_meta, metadata_batch, summarize, transcribe
from .batch import (
    InputClip,
    check_output_path,
    collect_inputs,
    infer_clips,
    split_model_argument,
    write_json_lines,
)

__all__ = ["InputClip", "ask", "chat", "check_instruction", "check_output_path", "check_positive", "collect_inputs",
           "generate_meta", "infer_clips", "metadata_batch", "split_model_argument", "summarize", "transcribe",
           "write_json_lines"]
