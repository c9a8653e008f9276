"""A toy speech task for tests and smoke runs: tones whose pitch names a word.

Each clip is a noisy tone at one of a few pitches with a random length; its "transcript" is the word
for that pitch. A model that learns it must read the audio (the prompt is the same for every clip).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

TONE_WORDS = {220.0: "low", 440.0: "middle", 880.0: "high", 1760.0: "very high"}


def build_tone_corpus(
    out_dir: str | Path, count: int, seed: int = 0, name: str = "train", seconds: tuple[float, float] = (0.3, 1.2)
) -> Path:
    """Write `count` 16 kHz wav files and `{name}.jsonl` (audio, transcript, duration_s); returns the manifest."""
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pitches = list(TONE_WORDS)
    manifest = out_dir / f"{name}.jsonl"
    with manifest.open("w") as rows:
        for i in range(count):
            pitch = pitches[int(rng.integers(len(pitches)))]
            duration = float(rng.uniform(*seconds))
            t = np.arange(int(duration * 16000)) / 16000
            wave = 0.3 * np.sin(2 * np.pi * pitch * t + rng.uniform(0, 6.28)) + 0.02 * rng.standard_normal(len(t))
            path = out_dir / "audio" / f"{name}-{i:05d}.wav"
            sf.write(path, wave.astype(np.float32), 16000, subtype="PCM_16")
            row = {"audio": f"audio/{path.name}", "transcript": TONE_WORDS[pitch], "duration_s": round(duration, 3)}
            rows.write(json.dumps(row) + "\n")
    return manifest
