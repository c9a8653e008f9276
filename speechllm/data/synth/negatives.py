"""Non-speech clips (speech_activity false): near silence, coloured noise, tones, chords, melodies, clicks.

Each generator takes a numpy Generator and a duration and returns float32 mono 16 kHz samples, so a seed
fixes the clip. They teach a model to answer SpeechActivity: False instead of transcribing noise.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from speechllm.data.synth.voices import SAMPLE_RATE


def colored_noise(rng: np.random.Generator, samples: int, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown), scaled to unit RMS."""
    spectrum = rng.standard_normal(samples // 2 + 1) + 1j * rng.standard_normal(samples // 2 + 1)
    freqs = np.fft.rfftfreq(samples, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1] if samples > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=samples)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def _envelope(samples: int, attack_s: float, release_s: float) -> np.ndarray:
    env = np.ones(samples, dtype=np.float32)
    a, r = min(samples, int(attack_s * SAMPLE_RATE)), min(samples, int(release_s * SAMPLE_RATE))
    if a:
        env[:a] = np.linspace(0, 1, a)
    if r:
        env[-r:] *= np.linspace(1, 0, r)
    return env


def _harmonic(freq: float, t: np.ndarray, rng: np.random.Generator, partials: int) -> np.ndarray:
    # Decaying partials with random weights make a note sound like an instrument rather than a pure tone.
    out = np.zeros_like(t)
    for k in range(1, partials + 1):
        if freq * k < SAMPLE_RATE / 2:
            out += rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * freq * k * t + rng.uniform(0, 2 * np.pi))
    return out


def silence(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Room-tone silence: very quiet pink noise (-75 to -55 dB RMS)."""
    return colored_noise(rng, samples, 1.0) * 10 ** (rng.uniform(-75, -55) / 20)


def noise(rng: np.random.Generator, samples: int) -> np.ndarray:
    """White, pink or brown noise at a random level."""
    return colored_noise(rng, samples, float(rng.choice([0.0, 1.0, 2.0]))) * rng.uniform(0.02, 0.2)


def tone(rng: np.random.Generator, samples: int) -> np.ndarray:
    """One steady or gliding sine between 100 Hz and 4 kHz (beeps, hums, dial tones)."""
    f0, f1 = rng.uniform(100, 4000, size=2) if rng.random() < 0.3 else [rng.uniform(100, 4000)] * 2
    phase = 2 * np.pi * np.cumsum(np.linspace(f0, f1, samples)) / SAMPLE_RATE
    return (np.sin(phase) * _envelope(samples, 0.01, 0.01) * rng.uniform(0.05, 0.5)).astype(np.float32)


def chord(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Two to four harmonic notes of an equal-tempered chord, held."""
    t = np.arange(samples) / SAMPLE_RATE
    root = 110 * 2 ** (rng.integers(0, 24) / 12)
    steps = rng.choice([0, 3, 4, 7, 10, 12], size=int(rng.integers(2, 5)), replace=False)
    out = sum(_harmonic(root * 2 ** (s / 12), t, rng, 6) for s in steps)
    out = out * _envelope(samples, 0.05, 0.3)
    return (out / (np.abs(out).max() + 1e-9) * rng.uniform(0.1, 0.6)).astype(np.float32)


def melody(rng: np.random.Generator, samples: int) -> np.ndarray:
    """A random tune: notes of a major or minor scale with harmonics, a pluck envelope and a bass line."""
    scale = [0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10]
    root, out, pos = 220 * 2 ** (rng.integers(0, 12) / 12), np.zeros(samples, dtype=np.float32), 0
    beat = int(rng.uniform(0.12, 0.5) * SAMPLE_RATE)
    while pos < samples:
        length = min(samples - pos, beat * int(rng.choice([1, 1, 2, 4])))
        step = scale[rng.integers(len(scale))] + 12 * int(rng.integers(-1, 2))
        t = np.arange(length) / SAMPLE_RATE
        note = _harmonic(root * 2 ** (step / 12), t, rng, 5) * np.exp(-t * rng.uniform(2, 8))
        note += 0.5 * _harmonic(root / 2 * 2 ** (scale[0] / 12), t, rng, 3) * np.exp(-t * 3)
        out[pos:pos + length] += note * _envelope(length, 0.005, 0.01)
        pos += length
    return (out / (np.abs(out).max() + 1e-9) * rng.uniform(0.1, 0.7)).astype(np.float32)


def clicks(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Sparse clicks and knocks (short decaying bursts) over faint noise."""
    out = colored_noise(rng, samples, 1.0) * 10 ** (rng.uniform(-70, -50) / 20)
    burst = int(0.01 * SAMPLE_RATE)
    decay = np.exp(-np.arange(burst) / (burst / 5))
    for start in rng.integers(0, max(1, samples - burst), size=int(rng.integers(2, 4 + samples // SAMPLE_RATE * 4))):
        out[start:start + burst] += (rng.standard_normal(burst) * decay * rng.uniform(0.05, 0.8))[: samples - start]
    return np.clip(out, -1, 1).astype(np.float32)


NEGATIVES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "silence": silence, "noise": noise, "tone": tone, "chord": chord, "melody": melody, "clicks": clicks,
}


def make_negative(kind: str, rng: np.random.Generator, duration_s: float) -> np.ndarray:
    """A non-speech clip of `kind` (a key of NEGATIVES) lasting `duration_s` seconds."""
    return NEGATIVES[kind](rng, max(1, int(duration_s * SAMPLE_RATE)))
