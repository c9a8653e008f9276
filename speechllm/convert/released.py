"""Asking a converted model exactly as the released project's own code asks it.

Their code tokenizes each text piece of the prompt separately (with or without the tokenizer's BOS, sometimes
dropping it again) and concatenates the embeddings with the audio between. A SentencePiece tokenizer marks the start
of each piece, so the same text tokenized whole gives other ids: `ReleasedPrompt` keeps their pieces, and
`generate_as_released` greedy-decodes from the very ids their code builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..audio import AudioInput, load_audio, pad_batch


@dataclass(frozen=True)
class PromptPiece:
    """One text piece as their code tokenizes it: `tokenizer(text, add_special_tokens=special)`, then
    `[1:]` when `drop_first` (their code removes the BOS it has just added)."""

    text: str
    special: bool = False
    drop_first: bool = False

    def ids(self, tokenizer) -> list[int]:
        ids = tokenizer(self.text, add_special_tokens=self.special).input_ids
        return ids[1:] if self.drop_first else ids


@dataclass(frozen=True)
class ReleasedPrompt:
    """Text pieces before the audio and after it."""

    before: list[PromptPiece] = field(default_factory=list)
    after: list[PromptPiece] = field(default_factory=list)

    def input_ids(self, tokenizer, audio_token_id: int, audio_tokens: int) -> list[int]:
        """The prompt's ids with `audio_tokens` placeholders where the audio goes."""
        ids = [i for piece in self.before for i in piece.ids(tokenizer)]
        ids += [audio_token_id] * audio_tokens
        return ids + [i for piece in self.after for i in piece.ids(tokenizer)]


def released_inputs(model, prompt: ReleasedPrompt, audio: AudioInput) -> dict[str, torch.Tensor]:
    """The batch of one: `prompt` around one clip (any file or array `load_audio` takes), on the model's device."""
    processor = model.processor
    clip = load_audio(audio, **processor.audio_limits)
    ids = prompt.input_ids(processor.tokenizer, processor.audio_token_id, processor.audio_token_count(len(clip)))
    values, lengths = pad_batch([clip])
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
             "audio_values": values, "audio_lengths": lengths}
    return {k: v.to(model.device) for k, v in batch.items()}


@torch.no_grad()
def generate_as_released(model, prompt: ReleasedPrompt, audio: AudioInput, *,
                         max_new_tokens: int = 256) -> tuple[list[int], str]:
    """(new token ids, their text without special tokens) from greedy decoding on `prompt` around `audio`, stopping
    at the tokenizer's EOS: what the released code's `generate(inputs_embeds=...)` and `decode(...,
    skip_special_tokens=True)` return for the same clip."""
    tokenizer = model.processor.tokenizer
    tokens = model.generate(**released_inputs(model, prompt, audio), max_new_tokens=max_new_tokens, do_sample=False,
                            eos_token_id=tokenizer.eos_token_id)[0].tolist()
    return tokens, tokenizer.decode(tokens, skip_special_tokens=True)
