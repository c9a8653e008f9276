"""Whisper's encoder on a clip's own mel frames, as Ultravox and vLLM run it (no 30 s padding).

Whisper was trained on 30 s windows; transformers' encoder refuses anything else. Ultravox (and vLLM's
`UltravoxWhisperEncoder`, vllm/model_executor/models/ultravox.py) instead feeds each clip's mel frames alone:
positions sliced to the clip's length and self-attention confined to its frames. A model trained this way is
exactly what vLLM serves, so this is the encoder mode an exported model needs (whisper `options: {pad_to_window:
false}`). The layers are transformers' own; only the loop over them is here, because it needs a padding mask.

`bucket_seconds` pads each clip with silence up to a whole number of buckets (1 s: a 2.3 s clip is encoded as 3 s,
the encoder attending to the silence too, as Whisper's 30 s window holds silence after the speech), so that clips of
about the same length share shapes, and the decoder, trained on windows that end in silence, sees some.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .errors import ConfigError

if TYPE_CHECKING:
    from transformers.modeling_outputs import BaseModelOutput

HOP = 160  # samples per mel frame at 16 kHz
OPTIONS = {"pad_to_window": True, "bucket_seconds": None}


def check_whisper_options(options: dict, crop_to_length: bool) -> dict:
    """The Whisper encoder's `options` with defaults filled in, or a ConfigError naming the bad one."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"whisper encoder: unknown option(s) {sorted(unknown)}; known: {sorted(OPTIONS)}")
    options = {**OPTIONS, **options}
    if not isinstance(options["pad_to_window"], bool):
        raise ConfigError(f"whisper encoder: pad_to_window must be true or false, got {options['pad_to_window']!r}")
    if not options["pad_to_window"] and not crop_to_length:
        raise ConfigError("whisper encoder: pad_to_window: false gives the clip's frames only; "
                          "it cannot keep crop_to_length: false")
    bucket = options["bucket_seconds"]
    if bucket is not None:
        if isinstance(bucket, bool) or not isinstance(bucket, numbers.Real) or not 0.02 <= bucket <= 30:
            raise ConfigError(f"whisper encoder: bucket_seconds must be a number of seconds from 0.02 to 30, "
                              f"got {bucket!r}")
        if options["pad_to_window"]:
            raise ConfigError("whisper encoder: bucket_seconds needs pad_to_window: false (with the 30 s window "
                              "every clip already has the same shape)")
    return options


def bucketed_samples(num_samples: int, bucket_samples: int, window_samples: int) -> int:
    """A clip's length rounded up to a whole number of buckets, at most the window (so never below the clip's own
    length, which the window already bounds); the clip's own length when `bucket_samples` is 0."""
    if not bucket_samples:
        return num_samples
    return max(num_samples, min(-(-num_samples // bucket_samples) * bucket_samples, window_samples))


def clip_mel(feature_extractor, wave: np.ndarray, size: int | None = None) -> torch.Tensor:
    """(mel bins, frames) of one clip alone: padded with zeros to `size` samples (default: its own length) rounded
    up to a whole number of hops (at least two), as Ultravox's processor pads it; ceil(size / 160) frames."""
    target = max(-(-max(len(wave), size or 0) // HOP) * HOP, 2 * HOP)
    wave = np.pad(wave, (0, target - len(wave)))
    mel = feature_extractor(wave, sampling_rate=16000, padding="longest", truncation=False,
                            return_tensors="pt").input_features[0]
    return mel[:, : target // HOP]


def encode_unpadded(encoder: nn.Module, mels: list[torch.Tensor], all_layers: bool = False) -> BaseModelOutput:
    """transformers' `WhisperEncoder` run on mel frames of different lengths (a list of (bins, frames)), each
    clip attending to its own frames only. A clip's outputs are the same alone and in a batch."""
    from transformers.modeling_outputs import BaseModelOutput

    param = encoder.conv1.weight
    lengths = torch.tensor([m.shape[1] for m in mels], device=param.device)
    mel = torch.zeros(len(mels), mels[0].shape[0], int(lengths.max()), dtype=param.dtype, device=param.device)
    for row, m in enumerate(mels):
        mel[row, :, : m.shape[1]] = m.to(param.device, param.dtype)
    x = nn.functional.gelu(encoder.conv1(mel))
    # conv2 reads one frame past the clip: zero it, as conv2's own padding is for a clip alone
    x = x * (torch.arange(x.shape[2], device=x.device)[None] < lengths[:, None])[:, None].to(x.dtype)
    x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    frames = (lengths - 1) // 2 + 1
    hidden = x + encoder.embed_positions.weight[: x.shape[1]]
    padded = torch.arange(x.shape[1], device=x.device)[None] >= frames[:, None]  # (batch, keys)
    mask = torch.zeros(padded.shape, dtype=hidden.dtype, device=hidden.device)
    mask = mask.masked_fill(padded, torch.finfo(hidden.dtype).min)[:, None, None, :].expand(-1, 1, x.shape[1], -1)
    states = [hidden]
    for layer in encoder.layers:
        hidden = layer(hidden, mask)
        states.append(hidden)
    return BaseModelOutput(last_hidden_state=encoder.layer_norm(hidden),
                           hidden_states=tuple(states) if all_layers else None)
