"""The default model's speed on real clips: its real-time factor against faster-whisper tiny.en (same encoder
weights) on the same clips, and its batched metadata answers against batch 1 (identical answers expected).
Same machine, one run.

    python bench/default_model_speed.py [--clips 32] [--batch 16]

Clips: the speech clips of ../shared/realspeech-dev (real lengths, 1-10 s). The default model answers the whole
metadata JSON (speech activity, transcript, gender, accent: heads included); faster-whisper only transcribes.
RTF = processing seconds / audio seconds (lower is faster); audio decoding is done beforehand for both.
"decoding only" times the LLM's constrained generation alone (prefill and steps), without the encoder and the heads,
which cost the same per clip at any batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import speechllm  # noqa: E402
from speechllm.audio import load_audio  # noqa: E402
from speechllm.evaluation.cascade import CascadeASR  # noqa: E402

REALSPEECH = Path(__file__).resolve().parents[2] / "shared" / "realspeech-dev"


def load_clips(count: int) -> list:
    rows = [json.loads(line) for line in (REALSPEECH / "manifest.jsonl").read_text().splitlines() if line.strip()]
    paths = [REALSPEECH / r["audio"] for r in rows if r.get("speech_activity") and r.get("transcript")]
    return [load_audio(p) for p in (paths * (count // len(paths) + 1))[:count]]


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


class DecodingClock:
    """Adds up the seconds `model.generate` takes: the decoder's prefill and steps, after the encoder and heads ran."""

    def __init__(self, model):
        self.seconds, self._generate = 0.0, model.generate
        model.generate = self

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self._generate(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    def lap(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    if not (REALSPEECH / "manifest.jsonl").is_file():
        raise SystemExit(f"needs the real clips of {REALSPEECH}")
    clips = load_clips(args.clips)
    audio_s = sum(len(c) for c in clips) / 16000
    model = speechllm.default_model()
    cascade = CascadeASR()
    inputs = [(c, 16000) for c in clips]
    model.generate_meta(inputs[:2], batch_size=2)  # warm-up: lazy imports, grammar compilation, allocations
    cascade.transcribe(clips[:1])

    # Clips sorted by length so a batch pads little, as the server's batcher and eval do.
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
    decoding = DecodingClock(model)
    batched_s, batched = timed(lambda: model.generate_meta([inputs[i] for i in order], batch_size=args.batch))
    batched_decoding_s = decoding.lap()
    single_s, single = timed(lambda: model.generate_meta([inputs[i] for i in order], batch_size=1))
    single_decoding_s = decoding.lap()
    cascade_s, _ = timed(lambda: cascade.transcribe(clips))
    result = {
        "clips": f"{len(clips)} speech clips of {REALSPEECH} ({audio_s:.0f} s of audio)",
        "torch_threads": torch.get_num_threads(),
        "default_model_rtf_batch1": round(single_s / audio_s, 4),
        f"default_model_rtf_batch{args.batch}": round(batched_s / audio_s, 4),
        "faster_whisper_rtf": round(cascade_s / audio_s, 4),
        f"rtf_ratio_default_batch{args.batch}_vs_faster_whisper": round(batched_s / cascade_s, 2),
        "rtf_ratio_default_batch1_vs_faster_whisper": round(single_s / cascade_s, 2),
        f"batch{args.batch}_vs_batch1_speedup": round(single_s / batched_s, 2),
        f"batch{args.batch}_vs_batch1_speedup_decoding_only": round(single_decoding_s / batched_decoding_s, 2),
        "decoding_share_of_batch1_time": round(single_decoding_s / single_s, 2),
        "mismatched_answers": sum(a.text != b.text for a, b in zip(single, batched)),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
