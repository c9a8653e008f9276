"""Pretrained models that some head features read, and the object that owns them once loaded.

- `voice`: a 256-d speaker embedding from resemblyzer's voice encoder (weights in the resemblyzer package, trained on
           real speakers): who is speaking, which carries gender and accent
- `vad`:   Silero VAD (its ONNX weights ship inside the faster-whisper package): mean and max speech probability,
           fraction of 32 ms windows above 0.5

A `PretrainedExtractors` loads each model on first use and holds it for as long as it lives: the attribute heads own
one, and fitting hands the one it used to the heads it fits. Nothing is cached at module level, so two owners never
share a model and dropping an owner frees what it loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..audio import SAMPLE_RATE as RATE
from ..errors import ConfigError

VAD_WINDOW = 512  # Silero VAD scores 32 ms windows of 16 kHz audio


class VoiceEncoder(nn.Module):
    """Resemblyzer's speaker encoder (GE2E d-vectors: 3-layer LSTM over 40 mel bands, trained on thousands of real
    speakers). Its weights ship inside the PyPI package `resemblyzer`; this is our own reimplementation of its
    forward pass and mel front end (numpy, no librosa), checked against the package's own code."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.mel_filters = None

    @classmethod
    def packaged(cls) -> "VoiceEncoder":
        """The encoder with the weights of the installed resemblyzer package; ConfigError when it is missing."""
        spec = importlib.util.find_spec("resemblyzer")
        path = Path(spec.origin).parent / "pretrained.pt" if spec and spec.origin else None
        if path is None or not path.exists():
            raise ConfigError("the 'voice' head feature needs the weights of the PyPI package resemblyzer "
                              "(pip install resemblyzer)")
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        encoder = cls()
        encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity")})
        return encoder.eval()

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """Power mel spectrogram (frames, 40): 25 ms Hann windows every 10 ms, centred, Slaney mel bands."""
        if self.mel_filters is None:
            from transformers.audio_utils import mel_filter_bank

            self.mel_filters = mel_filter_bank(num_frequency_bins=201, num_mel_filters=40, min_frequency=0.0,
                                               max_frequency=8000.0, sampling_rate=RATE, norm="slaney",
                                               mel_scale="slaney")
        padded = np.pad(np.asarray(audio, dtype=np.float64), (200, 200))
        frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[::160]
        power = np.abs(np.fft.rfft(frames * np.hanning(401)[:-1], n=400)) ** 2
        return (power @ self.mel_filters).astype(np.float32)

    def windows(self, audio: np.ndarray) -> np.ndarray:
        """The clip's 1.6 s mel windows (every 0.77 s, the last one zero-padded), raised to -30 dBFS first as
        resemblyzer does: (windows, 160, 40)."""
        audio = np.asarray(audio, dtype=np.float32)
        level = 20 * np.log10(np.sqrt(np.mean(audio ** 2)) + 1e-9)
        if level < -30:
            audio = audio * 10 ** ((-30 - level) / 20)
        mel = self.mel(audio)
        starts = list(range(0, max(len(mel) - 160, 0) + 1, 77))
        if starts[-1] + 160 < len(mel):
            starts.append(starts[-1] + 77)
        mel = np.pad(mel, ((0, max(0, starts[-1] + 160 - len(mel))), (0, 0)))
        return np.stack([mel[s:s + 160] for s in starts])

    @torch.no_grad()
    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """One L2-normalised 256-d voice embedding per clip: the normalised mean of its windows' embeddings.
        All windows of all clips go through the LSTM as one batch."""
        windows = [self.windows(audio) for audio in clips]
        _, (hidden, _) = self.lstm(torch.from_numpy(np.concatenate(windows)))
        parts = torch.relu(self.linear(hidden[-1]))
        parts = parts / parts.norm(dim=1, keepdim=True).clamp_min(1e-9)
        out = []
        for part in parts.split([len(w) for w in windows]):
            mean = part.mean(0)
            out.append((mean / mean.norm().clamp_min(1e-9)).numpy())
        return np.stack(out)


def load_silero_vad():
    """A new Silero VAD model (faster-whisper's ONNX session wrapper); ConfigError when faster-whisper is missing."""
    try:
        from faster_whisper.vad import get_vad_model
    except ImportError as e:
        raise ConfigError("the 'vad' head feature needs faster-whisper (pip install faster-whisper)") from e
    # get_vad_model sits behind a process-wide lru_cache; the function under it builds a model this caller owns.
    return getattr(get_vad_model, "__wrapped__", get_vad_model)()


class PretrainedExtractors:
    """The pretrained models of the `voice` and `vad` features, each loaded on first use and held by this object.

    They are freed with it (or by `release`). A copy (deepcopy, pickle) starts with nothing loaded: the models are
    read-only weights that load again, and an ONNX session cannot be copied."""

    def __init__(self):
        self._voice_encoder: VoiceEncoder | None = None
        self._vad = None

    def __reduce__(self):
        return (type(self), ())

    @property
    def loaded(self) -> list[str]:
        """The features whose model this object holds now, of "voice" and "vad"."""
        return [name for name, model in [("voice", self._voice_encoder), ("vad", self._vad)] if model is not None]

    @property
    def voice_encoder(self) -> VoiceEncoder:
        if self._voice_encoder is None:
            self._voice_encoder = VoiceEncoder.packaged()
        return self._voice_encoder

    @property
    def vad(self):
        if self._vad is None:
            self._vad = load_silero_vad()
        return self._vad

    def release(self) -> None:
        """Drop the loaded models; they load again on next use."""
        self._voice_encoder, self._vad = None, None

    def speech_probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Silero VAD's speech probability for each 32 ms window (512 samples) of a 16 kHz clip."""
        audio = np.asarray(audio, dtype=np.float32)
        padded = np.pad(audio, (0, (-len(audio)) % VAD_WINDOW))
        if len(padded) == 0:
            padded = np.zeros(VAD_WINDOW, dtype=np.float32)
        return np.asarray(self.vad(padded), dtype=np.float32).reshape(-1)


def _owner(extractors: PretrainedExtractors | None) -> PretrainedExtractors:
    # Without an owner the models load for this call alone and are freed after it.
    return extractors if extractors is not None else PretrainedExtractors()


def voice_features(clips: Sequence[np.ndarray], extractors: PretrainedExtractors | None = None) -> np.ndarray:
    """Per clip, the speaker embedding of a voice encoder trained on real speakers (see VoiceEncoder): (clips, 256)."""
    return _owner(extractors).voice_encoder.embed(clips).astype(np.float32)


def vad_features(clips: Sequence[np.ndarray], extractors: PretrainedExtractors | None = None) -> np.ndarray:
    """Per clip, Silero VAD's mean and max speech probability and the fraction of windows above 0.5: (clips, 3)."""
    extractors = _owner(extractors)
    rows = []
    for audio in clips:
        probs = extractors.speech_probabilities(audio)
        rows.append([probs.mean(), probs.max(), (probs > 0.5).mean()])
    return np.asarray(rows, dtype=np.float32)
