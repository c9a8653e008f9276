import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest


def tone(seconds: float, freq: float = 220.0, rate: int = 16000, seed: int = 0) -> tuple[np.ndarray, int]:
    """A short noisy tone as an (array, rate) audio input."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
    return wave.astype(np.float32), rate


@pytest.fixture(scope="session")
def tiny():
    """A tiny random speech LLM (whisper encoder, stack connector, llama) shared by read-only tests."""
    from speechllm.testing import tiny_model

    return tiny_model()
