"""Converters for the seed projects' released checkpoints: each writes a speechllm model folder (our config and
weights, no remote code) that `speechllm.load` opens.

registry.py              the converters by name, and the prompt each project's own inference builds
checkpoints.py           reading checkpoint files, key prefixes, LoRA folding, building and saving the model
released.py              asking a converted model with the project's own prompt, token for token
skit_ai.py               skit-ai SpeechLLM 2B / 1.5B
speech_summarization.py  Kang & Roy's audio encoder for MiniChat
self_powered.py          Self-Powered LSM
"""

from __future__ import annotations

import inspect

from ..errors import ConfigError
from . import self_powered, skit_ai, speech_summarization  # noqa: F401  (each registers its converter)
from .registry import CONVERTERS, converter
from .released import PromptPiece, ReleasedPrompt
from .released import generate_as_released as _generate


def convert(source, out, source_format: str, **options):
    """Convert the checkpoint `source` (a hub id, a folder or a file) written by the project `source_format` (a name
    in CONVERTERS: "skit-ai", "speech-summarization", "self-powered") into a speechllm model folder `out`.
    `options` go to that project's converter. Returns the converted model."""
    chosen = converter(source_format)
    accepted = list(inspect.signature(chosen.convert).parameters)[2:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"option(s) {unknown} do not apply to {source_format!r} checkpoints; it takes {accepted}")
    return chosen.convert(source, out, **options)


def generate_as_released(model, source_format: str, audio, instruction: str | None = None, *,
                         max_new_tokens: int = 256) -> tuple[list[int], str]:
    """(new token ids, text) that greedy decoding gives for `audio` with the prompt the project `source_format`'s own
    inference code builds around `instruction` (its default instruction when None); see released.py."""
    prompt_of = converter(source_format).released_prompt
    prompt = prompt_of() if instruction is None else prompt_of(instruction)
    return _generate(model, prompt, audio, max_new_tokens=max_new_tokens)


__all__ = ["CONVERTERS", "PromptPiece", "ReleasedPrompt", "convert", "converter", "generate_as_released"]
