"""Whisper's encoder on a clip's own mel frames, as Ultravox and vLLM run it (no 30 s padding).

Whisper was trained on 30 s windows; transformers' encoder refuses anything else. Ultravox (and vLLM's
`UltravoxWhisperEncoder`, vllm/model_executor/models/ultravox.py) instead feeds each clip's mel frames alone:
positions sliced to the clip's length and self-attention confined to its frames. A model trained this way is
exactly what vLLM serves, so this is the encoder mode an exported model needs (whisper `options: {pad_to_window:
false}`). The layers are transformers' own; only the loop over them is here, because it needs a padding mask.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

HOP = 160  # samples per mel frame at 16 kHz


def clip_mel(feature_extractor, wave: np.ndarray) -> torch.Tensor:
    """(mel bins, frames) of one clip alone: padded with zeros to a whole number of hops (at least two), as
    Ultravox's processor pads it; ceil(samples / 160) frames."""
    target = max(-(-len(wave) // HOP) * HOP, 2 * HOP)
    wave = np.pad(wave, (0, target - len(wave)))
    mel = feature_extractor(wave, sampling_rate=16000, padding="longest", truncation=False,
                            return_tensors="pt").input_features[0]
    return mel[:, : target // HOP]


def encode_unpadded(encoder: nn.Module, mels: list[torch.Tensor], all_layers: bool = False) -> BaseModelOutput:
    """transformers' `WhisperEncoder` run on mel frames of different lengths (a list of (bins, frames)), each
    clip attending to its own frames only. A clip's outputs are the same alone and in a batch."""
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
