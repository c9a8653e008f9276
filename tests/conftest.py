import os
from dataclasses import replace
from pathlib import Path

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


def packaged_at(monkeypatch, name: str, folder) -> None:
    """For one test, the packaged model `name` ("default", "gemma-bridge") is `folder` (a saved model, or none)."""
    from speechllm.models.packaged import PACKAGED_MODELS

    monkeypatch.setitem(PACKAGED_MODELS, name, replace(PACKAGED_MODELS[name], folder=Path(folder)))


@pytest.fixture(scope="session", autouse=True)
def cpu_without_native_bf16():
    """Every test runs as on a CPU without native bf16 (most CI machines): loaded models are fp32 like the models
    they are compared with, on any machine. Tests of the bf16 choice patch the detector back on themselves."""
    from speechllm.pretrained import precision

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "cpu_has_native_bf16", lambda: False)
        yield


@pytest.fixture(scope="session")
def tiny():
    """A tiny random speech LLM (whisper encoder, stack connector, llama) shared by read-only tests."""
    from speechllm.testing import tiny_model

    return tiny_model()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny random model (one per test module)."""
    from speechllm.testing import tiny_model

    path = tmp_path_factory.mktemp("model")
    tiny_model().save_pretrained(path)
    return path
