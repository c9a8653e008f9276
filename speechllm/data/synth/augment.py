"""Deterministic augmentation of 16 kHz clips: speed, reverberation, additive noise and gain.

`draw_augmentation` decides, with probability `config.prob`, whether to touch a clip at all, and then
picks each operation with probability 1/2 (at least one) and its strength; `apply_augmentation` applies
them in the order a recording would: the speaker's speed, the room, the background noise, the microphone
level. Both draw only from the generator they are given, so a seed fixes the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from speechllm.data.synth.negatives import colored_noise
from speechllm.data.synth.voices import SAMPLE_RATE
from speechllm.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges each operation draws from, uniformly; `prob` is the chance a clip is augmented at all."""

    prob: float = 0.5
    speed: tuple[float, float] = (0.9, 1.1)
    rt60_s: tuple[float, float] = (0.1, 0.8)
    snr_db: tuple[float, float] = (10.0, 40.0)
    gain_db: tuple[float, float] = (-12.0, 6.0)

    def __post_init__(self):
        if not 0 <= self.prob <= 1:
            raise ConfigError(f"augment_prob must be between 0 and 1, got {self.prob}")
        if not 0 < self.speed[0] <= self.speed[1]:
            raise ConfigError(f"speed range must be positive and increasing, got {self.speed}")


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch moves with it, as in Kaldi's speed perturbation): length / factor."""
    if factor == 1.0:
        return audio
    return soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ").astype(np.float32)


def reverberate(audio: np.ndarray, rng: np.random.Generator, rt60_s: float) -> np.ndarray:
    """Convolve with a synthetic room response: direct sound, sparse early reflections, then exponentially
    decaying noise reaching -60 dB after `rt60_s`. The output keeps the input's length and peak level."""
    length = int(rt60_s * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    response = rng.standard_normal(length) * np.exp(-6.9 * t / rt60_s)  # ln(1000) = 6.9: -60 dB at rt60
    response[: int(0.005 * SAMPLE_RATE)] = 0  # the first reflection arrives a few ms after the direct sound
    for delay in rng.integers(int(0.005 * SAMPLE_RATE), max(int(0.05 * SAMPLE_RATE), 2), size=6):
        if delay < length:
            response[delay] += rng.uniform(0.2, 0.6)
    response *= rng.uniform(0.1, 0.5) / (np.sqrt(np.sum(response**2)) + 1e-9)  # wet level vs dry
    response[0] = 1.0
    wet = np.fft.irfft(np.fft.rfft(audio, len(audio) + length) * np.fft.rfft(response, len(audio) + length))
    wet = wet[: len(audio)]
    peak_in, peak_out = np.abs(audio).max(), np.abs(wet).max()
    return (wet * (peak_in / peak_out if peak_out > 0 else 1.0)).astype(np.float32)


def add_noise(audio: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Add white, pink or brown noise at `snr_db` below the clip's power."""
    power = float(np.mean(audio.astype(np.float64) ** 2))
    noise = colored_noise(rng, len(audio), float(rng.choice([0.0, 1.0, 2.0])))
    return (audio + noise * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by `gain_db`, then scale down if needed so the peak stays below full scale (no clipping)."""
    out = audio * 10 ** (gain_db / 20)
    peak = float(np.abs(out).max()) if len(out) else 0.0
    return (out * (0.99 / peak) if peak > 0.99 else out).astype(np.float32)


def draw_augmentation(rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> dict[str, float]:
    """Decide how to augment one clip: {} with probability 1 - config.prob, else a non-empty subset of
    {"speed": factor, "reverb": rt60 seconds, "noise": SNR dB, "gain": dB}, each operation with chance 1/2."""
    if rng.random() >= config.prob:
        return {}
    chosen = rng.random(4) < 0.5
    if not chosen.any():
        chosen[rng.integers(4)] = True
    ranges = {"speed": config.speed, "reverb": config.rt60_s, "noise": config.snr_db, "gain": config.gain_db}
    return {name: float(rng.uniform(*span)) for (name, span), keep in zip(ranges.items(), chosen) if keep}


def apply_augmentation(audio: np.ndarray, ops: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Apply drawn operations in recording order (speed, room, noise, level); `rng` draws the room response
    and the noise samples."""
    if "speed" in ops:
        audio = change_speed(audio, ops["speed"])
    if "reverb" in ops:
        audio = reverberate(audio, rng, ops["reverb"])
    if "noise" in ops:
        audio = add_noise(audio, rng, ops["noise"])
    if "gain" in ops:
        audio = apply_gain(audio, ops["gain"])
    return audio


def augment(
    audio: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
) -> tuple[np.ndarray, dict]:
    """Maybe augment one clip; returns (audio, the operations applied with their drawn values)."""
    ops = draw_augmentation(rng, config)
    return apply_augmentation(audio, ops, rng), ops
