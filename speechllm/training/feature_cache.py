"""Disk cache of frozen-encoder outputs, keyed by audio content and encoder identity.

When the encoder does not train, its output for a clip never changes, so later epochs and stages read
it from disk instead of running the encoder. One safetensors file per clip; writes are atomic, so a
crash never leaves a half-written entry that would be read later.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """A hash of the encoder's config, options, features version and the bytes of every weight: a different or
    retrained encoder never hits old entries, even one whose weights differ only by a permutation (a sum of each
    tensor would not see it)."""
    digest = hashlib.sha1()
    for module in getattr(encoder, "primary", None), getattr(encoder, "secondary", None), encoder:
        config = getattr(getattr(module, "model", None), "config", None)
        if config is not None:
            digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    digest.update(str(getattr(encoder, "window_samples", "")).encode())
    # Options shape the features too (a transcriber's beams and token budget), and so does the code's version of
    # them: `features_version`, raised when an encoder computes its features differently.
    spec = getattr(encoder, "spec", None)
    if spec is not None:
        digest.update(json.dumps(getattr(spec, "options", {}), sort_keys=True, default=str).encode())
    digest.update(str(getattr(encoder, "features_version", 0)).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # raw bytes, whatever the dtype (bf16 too)
    return digest.hexdigest()[:16]


class FeatureCache:
    def __init__(self, directory: str | Path, encoder: torch.nn.Module, dtype: torch.dtype = torch.float32):
        self.encoder = encoder
        self.dtype = dtype
        self.directory = Path(directory) / encoder_fingerprint(encoder)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _path(self, waveform: torch.Tensor) -> Path:
        key = hashlib.sha1(waveform.detach().float().cpu().numpy().tobytes()).hexdigest()
        return self.directory / key[:2] / f"{key}.safetensors"

    @torch.no_grad()
    def features(self, audio_values: torch.Tensor, audio_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as the encoder's forward: padded (clips, frames, dim) features and frame counts."""
        clips = [w[:n] for w, n in zip(audio_values, audio_lengths.tolist())]
        paths = [self._path(c) for c in clips]
        found = [load_file(p)["features"] if p.exists() else None for p in paths]
        todo = [i for i, f in enumerate(found) if f is None]
        self.hits += len(clips) - len(todo)
        self.misses += len(todo)
        if todo:
            values = torch.nn.utils.rnn.pad_sequence([clips[i] for i in todo], batch_first=True)
            lengths = torch.tensor([len(clips[i]) for i in todo])
            features, frames = self.encoder(values.to(audio_values.device), lengths.to(audio_values.device))
            for i, feats, n in zip(todo, features, frames.tolist()):
                found[i] = feats[:n].to(self.dtype).cpu().contiguous()
                paths[i].parent.mkdir(exist_ok=True)
                temporary = paths[i].with_suffix(f".tmp{os.getpid()}")
                save_file({"features": found[i]}, str(temporary))
                os.replace(temporary, paths[i])
        lengths = torch.tensor([len(f) for f in found], device=audio_values.device)
        padded = torch.nn.utils.rnn.pad_sequence([f.float() for f in found], batch_first=True)
        return padded.to(audio_values.device), lengths
