"""Head features read from the model's own encoder, and the one encoder pass that serves them and the LLM.

- `encoder`:        mean and standard deviation of the encoder's output frames over the clip's own frames
- `encoder_layers`: the same for every layer of the encoder: middle layers keep the phonetic detail that tells
                    accents apart and the last layer (tuned for Whisper's decoder) partly loses (synthetic accent:
                    0.88 from the last layer, 0.98 from all five of Whisper tiny.en's)

`encode_for_heads` is a function of the model for now; it is meant to become a method of the model class.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

# Features read from the model's encoder, and those among them that need every layer of it.
ENCODER_FEATURES, LAYER_FEATURES = {"encoder", "encoder_layers"}, {"encoder_layers"}

# What the encoder features read: (clips, frames, width) or, every layer kept, (clips, frames, layers, width)
# features, and each clip's own number of frames.
EncoderFrames = tuple[torch.Tensor, torch.Tensor]


def pooled(features: torch.Tensor, frames: torch.Tensor) -> np.ndarray:
    """Per clip, mean and standard deviation over its own frames of (clips, frames, ...) features, flattened."""
    rows = []
    for f, n in zip(features.float(), frames.tolist()):
        f = f[: max(int(n), 1)]
        rows.append(torch.cat([f.mean(0), f.std(0, unbiased=False)], dim=-1).reshape(-1).numpy())
    return np.asarray(rows, dtype=np.float32)


def encoder_features(encoder_frames: EncoderFrames | None) -> np.ndarray:
    """The `encoder` feature: the last layer's frames pooled per clip, (clips, 2 * width)."""
    if encoder_frames is None:
        raise ConfigError("the 'encoder' head feature needs the model's encoder frames")
    features, frames = encoder_frames
    if features.dim() == 4:  # every layer was kept: the last is the encoder's output
        features = features[:, :, -1]
    return pooled(features, frames)


def encoder_layer_features(encoder_frames: EncoderFrames | None) -> np.ndarray:
    """The `encoder_layers` feature: every layer's frames pooled per clip, (clips, layers * 2 * width)."""
    if encoder_frames is None or encoder_frames[0].dim() != 4:
        raise ConfigError("the 'encoder_layers' head feature needs every layer of the model's encoder")
    return pooled(*encoder_frames)


def encode_for_heads(model, values: torch.Tensor, lengths: torch.Tensor, features: set) -> tuple:
    """One encoder pass over padded clips for the head features `features` -> (what the features read, what
    the LLM reads: the last layer's frames and lengths), both None when no feature needs the encoder."""
    if not features & ENCODER_FEATURES:
        return None, None
    return model.encode_audio_layers(values, lengths, all_layers=bool(features & LAYER_FEATURES))
