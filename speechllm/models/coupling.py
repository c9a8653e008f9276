"""How the LLM reads the audio: one small class per coupling, chosen from the spec by a registry.

A coupling owns what differs between the designs: how many prompt positions a clip takes
(`audio_token_count`, from the spec alone, so the processor needs no model), how the audio enters the
LLM (`llm_inputs`), and generation. `PrefixCoupling` writes connector outputs into placeholder positions of
the prompt (decoder-only LLMs); `CrossAttentionCoupling` hands them to the LLM's cross-attention layers
(Whisper's decoder), one clip per prompt, and masks each row's padding there.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from ..config import ModelSpec
from ..connectors import connector_output_length
from ..encoders import encoder_frame_count
from ..errors import ConfigError, InputError

COUPLINGS: dict[str, type["Coupling"]] = {}


def register_coupling(name: str) -> Callable:
    def register(cls):
        COUPLINGS[name] = cls
        cls.name = name
        return cls

    return register


def build_coupling(spec: ModelSpec) -> "Coupling":
    """The coupling `spec.llm.coupling` names, for the encoder and connector of `spec` (no weights needed)."""
    if spec.llm.coupling not in COUPLINGS:
        raise ConfigError(f"unknown coupling {spec.llm.coupling!r}; known: {sorted(COUPLINGS)}")
    return COUPLINGS[spec.llm.coupling](spec)


def audio_token_count(spec: ModelSpec, num_samples: int) -> int:
    """LLM prompt positions taken by a clip of `num_samples` 16 kHz samples in a model built from `spec`."""
    return build_coupling(spec).audio_token_count(num_samples)


class Coupling:
    """Base class. Picklable (plain data), so a processor holding one can go to a DataLoader worker."""

    name: str
    clips_per_prompt: int | None = None  # how many clips each prompt must hold (None: any number)

    def __init__(self, spec: ModelSpec):
        self.frames = encoder_frame_count(spec.encoder, spec.fusion_encoder)
        self.connector = spec.connector

    @property
    def min_samples(self) -> int:
        """The shortest clip the encoder turns into at least one frame."""
        return self.frames.min_samples

    def audio_token_count(self, num_samples: int) -> int:
        raise NotImplementedError

    def llm_inputs(self, model, input_ids, attention_mask, audio_values=None, audio_lengths=None, audio_embeds=None,
                   audio_features=None) -> tuple[dict, contextlib.AbstractContextManager]:
        """The LLM's inputs for a batch (attention mask included), and the context to run the LLM in."""
        raise NotImplementedError

    def generate(self, model, input_ids, attention_mask, audio_values=None, audio_lengths=None, audio_features=None,
                 **kwargs):
        """The LLM's `generate` on a batch; new tokens only."""
        raise NotImplementedError


@register_coupling("prefix")
class PrefixCoupling(Coupling):
    """Audio embeddings fill placeholder positions of the prompt: as many as the connector gives for the clip."""

    def audio_token_count(self, num_samples: int) -> int:
        frames = self.frames.output_length(num_samples)
        return connector_output_length(self.connector, self.frames.frame_rate, frames)

    def llm_inputs(self, model, input_ids, attention_mask, audio_values=None, audio_lengths=None, audio_embeds=None,
                   audio_features=None):
        embeds, unused = model.embed_audio(input_ids, audio_values, audio_lengths, audio_embeds, audio_features)
        inputs = {"inputs_embeds": embeds, "attention_mask": attention_mask}
        if unused is not None:
            # Unused budget positions leave attention and the position count, as generate counts positions.
            inputs["attention_mask"] = without(attention_mask, unused, input_ids)
            inputs["position_ids"] = positions_of(inputs["attention_mask"])
        return inputs, contextlib.nullcontext()

    def generate(self, model, input_ids, attention_mask, audio_values=None, audio_lengths=None, audio_features=None,
                 **kwargs):
        embeds, unused = model.embed_audio(input_ids, audio_values, audio_lengths, audio_features=audio_features)
        if unused is not None:
            attention_mask = without(attention_mask, unused, input_ids)
        return model.language_model.generate(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)


def without(attention_mask, unused: torch.Tensor, input_ids) -> torch.Tensor:
    """The attention mask (all ones when None) with the `unused` positions off."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    return mask.masked_fill(unused.to(mask.device), 0)


def positions_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip masked positions, as transformers' generate computes them for a prompt."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


@register_coupling("cross_attention")
class CrossAttentionCoupling(Coupling):
    """The LLM reads each prompt's one clip through cross-attention; the prompt holds no audio positions."""

    clips_per_prompt = 1

    def audio_token_count(self, num_samples: int) -> int:
        return 0

    def audio_states(self, model, input_ids, audio_values=None, audio_lengths=None, audio_features=None):
        """Connector outputs (rows, frames, width), exactly one clip per row, and each row's number of real
        frames (the rest is padding up to the longest clip)."""
        if audio_features is None:
            if audio_values is None:
                raise InputError("this model reads audio through cross-attention: every prompt needs one clip")
            states, frames = model.encode_audio(audio_values.to(model.device), audio_lengths.to(model.device))
        else:
            features, frames = audio_features
            dtype = model.connector_dtype(features.dtype)
            states, frames = model.connector(features.to(model.device, dtype), frames.to(model.device))
        if len(states) != input_ids.shape[0]:
            raise InputError(f"this model reads one clip per conversation; got {len(states)} clips for "
                             f"{input_ids.shape[0]}")
        return states.to(model.llm_dtype), frames  # the connector may compute in another dtype (precision.py)

    def llm_inputs(self, model, input_ids, attention_mask, audio_values=None, audio_lengths=None, audio_embeds=None,
                   audio_features=None):
        states, frames = self.audio_states(model, input_ids, audio_values, audio_lengths, audio_features)
        padding = cross_attention_ignores_padding(model.language_model, frames, states.shape[1])
        return {"input_ids": input_ids, "encoder_outputs": (states,), "attention_mask": attention_mask}, padding

    def generate(self, model, input_ids, attention_mask, audio_values=None, audio_lengths=None, audio_features=None,
                 **kwargs):
        states, frames = self.audio_states(model, input_ids, audio_values, audio_lengths, audio_features)
        # generate copies each prompt row for its beams (or returned sequences), but not the audio states of a
        # decoder-only LLM: copy them alike, or a batch of clips would meet rows x beams queries.
        config = model.language_model.generation_config
        copies = max(kwargs.get("num_beams") or config.num_beams or 1,
                     kwargs.get("num_return_sequences") or config.num_return_sequences or 1)
        states = states.repeat_interleave(copies, dim=0)
        with cross_attention_ignores_padding(model.language_model, frames, states.shape[1]):
            out = model.language_model.generate(
                input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=(states,), **kwargs
            )
        if isinstance(out, torch.Tensor):  # given input_ids, generate returns prompt + answer
            return out[:, input_ids.shape[1] :]
        return out


@contextlib.contextmanager
def cross_attention_ignores_padding(language_model: nn.Module, frames: torch.Tensor, width: int):
    """Within the block, the LLM's cross-attention layers (Whisper-style `encoder_attn`) ignore encoder frames past
    each row's `frames`. Whisper's decoder passes no encoder mask to them (transformers hard-codes None), so a clip
    batched with a longer one (over 30 s, or any longer one when outputs are cropped to length) would attend to
    zero padding and be answered differently than alone. A pre-hook hands each layer the mask instead."""
    frames = frames.to(torch.long)
    if bool((frames >= width).all()):
        yield  # nothing padded: the usual case for Whisper's fixed 30 s window
        return
    padded = torch.arange(width, device=frames.device)[None, :] >= frames[:, None]  # (rows, width)
    masks = {}  # built once per (dtype, device, rows), not at every layer of every decoding step

    def with_mask(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        key = (hidden.dtype, hidden.device, hidden.shape[0])
        if key not in masks:
            mask = torch.zeros(padded.shape, dtype=hidden.dtype, device=hidden.device)
            mask = mask.masked_fill(padded.to(hidden.device), torch.finfo(hidden.dtype).min)[:, None, None, :]
            # beam search: each row's beams follow it
            masks[key] = mask.repeat_interleave(hidden.shape[0] // len(mask), dim=0)
        return args, {**kwargs, "attention_mask": masks[key]}

    layers = [m for name, m in language_model.named_modules() if name.endswith("encoder_attn")]
    if not layers:
        raise ConfigError("this LLM's cross-attention layers are not Whisper-style `encoder_attn`; batch clips of the "
                          "same length, or one clip at a time")
    handles = [layer.register_forward_pre_hook(with_mask, with_kwargs=True) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
