"""The default model's speed on clips under 10 s, side by side in one run: Whisper's encoder on its 30 s window and
on the clip's own length (`options: {pad_to_window: false}`, optionally `bucket_seconds`), against faster-whisper
tiny.en (same encoder weights) sequential and batched, on the same clips. Batched answers are checked against batch 1.

    python bench/default_model_speed.py [--clips 32] [--batches 1,8,16] [--bucket-seconds 1]
                                        [--manifest runs/synth/test.jsonl] [--model speechllm/resources/default_model]

Clips: the speech clips under 10 s of ../shared/realspeech-dev (or of --manifest). The default model answers the whole
metadata JSON (speech activity, transcript, gender, accent: heads included); faster-whisper only transcribes.
RTF = processing seconds / audio seconds (lower is faster); clips/s = clips / processing seconds; audio decoding is
done beforehand for all. faster-whisper batched = its CTranslate2 model encoding and decoding a batch of 30 s windows
at once (what its BatchedInferencePipeline does for the chunks of one file). Aims (issue 13): the clip-length
model's RTF <= 0.5x faster-whisper's, and its clips/s at the best batch size >= 2x faster-whisper's sequential.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_variant import encoder_variant  # noqa: E402

import speechllm  # noqa: E402
from speechllm.audio import load_audio  # noqa: E402
from speechllm.evaluation.cascade import CascadeASR  # noqa: E402

REALSPEECH = Path(__file__).resolve().parents[2] / "shared" / "realspeech-dev" / "manifest.jsonl"
WINDOW = {"crop_to_length": False, "options": {}}


def load_clips(manifest: Path, count: int, max_seconds: float = 10.0) -> list:
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    paths = [manifest.parent / r["audio"] for r in rows if r.get("speech_activity") and r.get("transcript")]
    clips = [c for c in (load_audio(p) for p in paths) if len(c) < max_seconds * 16000]
    return (clips * (count // max(len(clips), 1) + 1))[:count]


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


class BatchedFasterWhisper:
    """faster-whisper's CTranslate2 Whisper on a batch of clips at once (each padded to the 30 s window), greedy."""

    def __init__(self, cascade: CascadeASR):
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        self.model, self.pad_or_trim = cascade.model, pad_or_trim
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                                   language="en")
        self.prompt = self.model.get_prompt(self.tokenizer, [], without_timestamps=True)

    def transcribe(self, clips, batch_size: int) -> list[str]:
        texts = []
        for start in range(0, len(clips), batch_size):
            group = clips[start : start + batch_size]
            features = np.stack([self.pad_or_trim(self.model.feature_extractor(c)[..., :-1]) for c in group])
            results = self.model.model.generate(self.model.encode(features), [self.prompt] * len(group),
                                                beam_size=1, max_length=self.model.max_length, suppress_blank=True,
                                                suppress_tokens=[-1])
            texts += [self.tokenizer.decode(r.sequences_ids[0]).strip() for r in results]
        return texts


def measure(name, run, batches, audio_s, count) -> tuple[dict, dict]:
    """{batch: seconds} of `run(batch_size)` and the answers of each batch size."""
    seconds, answers = {}, {}
    for batch in batches:
        seconds[batch], answers[batch] = timed(lambda: run(batch))
        print(f"  {name} batch {batch}: RTF {seconds[batch] / audio_s:.3f}, {count / seconds[batch]:.2f} clips/s",
              file=sys.stderr)
    return seconds, answers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batches", default="1,8,16", help="comma-separated batch sizes to try")
    parser.add_argument("--bucket-seconds", type=float, default=None,
                        help="clip-length encoder: pad each clip to a whole number of these (default: none)")
    parser.add_argument("--manifest", type=Path, default=REALSPEECH)
    parser.add_argument("--model", default="default", help="a saved model folder (default: the shipped model)")
    args = parser.parse_args()
    if not args.manifest.is_file():
        raise SystemExit(f"needs the clips of {args.manifest}")
    batches = sorted({int(b) for b in args.batches.split(",")} | {1})
    clips = load_clips(args.manifest, args.clips)
    audio_s = sum(len(c) for c in clips) / 16000
    clip_length = {"crop_to_length": True, "options": {"pad_to_window": False, "bucket_seconds": args.bucket_seconds}}
    clip_length["options"] = {k: v for k, v in clip_length["options"].items() if v is not None}
    # Clips sorted by length so a batch pads little, as the server's batcher and eval do.
    inputs = [(clips[i], 16000) for i in sorted(range(len(clips)), key=lambda i: len(clips[i]))]
    result = {"clips": f"{len(clips)} speech clips under 10 s of {args.manifest} ({audio_s:.0f} s of audio)",
              "torch_threads": torch.get_num_threads()}
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, encoder in [("window_30s", WINDOW), ("clip_length", clip_length)]:
            model = speechllm.load(encoder_variant(args.model, Path(tmp) / name, encoder))
            model.generate_meta(inputs[:2], batch_size=2)  # warm-up: lazy imports, grammar compilation, allocations
            seconds[name], answers = measure(name, lambda b: model.generate_meta(inputs, batch_size=b), batches,
                                             audio_s, len(clips))
            result[f"{name}_mismatched_answers_vs_batch1"] = {
                b: sum(x.text != y.text for x, y in zip(answers[1], answers[b])) for b in batches if b != 1}
    cascade = CascadeASR()
    batched = BatchedFasterWhisper(cascade)
    cascade.transcribe(clips[:1])
    ordered = [c for c, _ in inputs]
    seconds["faster_whisper_sequential"], sequential = measure(
        "faster_whisper_sequential", lambda b: cascade.transcribe(ordered), [1], audio_s, len(clips))
    seconds["faster_whisper_batched"], batched_texts = measure(
        "faster_whisper_batched", lambda b: batched.transcribe(ordered, b), [b for b in batches if b != 1], audio_s,
        len(clips))
    result["faster_whisper_batched_mismatched_transcripts_vs_sequential"] = {
        b: sum(x != y for x, y in zip(sequential[1], texts)) for b, texts in batched_texts.items()}
    best = {name: min(runs, key=runs.get) for name, runs in seconds.items()}
    for name, runs in seconds.items():
        result[name] = {f"batch{b}": {"rtf": round(s / audio_s, 4), "clips_per_s": round(len(clips) / s, 2)}
                        for b, s in runs.items()}
        result[name]["best_batch"] = best[name]
    fw_seq = seconds["faster_whisper_sequential"][1]
    fw_best = seconds["faster_whisper_batched"][best["faster_whisper_batched"]]
    for name in ("window_30s", "clip_length"):
        runs = seconds[name]
        result[f"{name}_rtf_batch1_vs_faster_whisper_sequential"] = round(runs[1] / fw_seq, 2)
        result[f"{name}_rtf_best_batch_vs_faster_whisper_sequential (aim <= 0.5)"] = round(runs[best[name]] / fw_seq,
                                                                                             2)
        result[f"{name}_rtf_best_batch_vs_faster_whisper_best_batch"] = round(runs[best[name]] / fw_best, 2)
        result[f"{name}_clips_per_s_best_batch_vs_faster_whisper_sequential (aim >= 2)"] = round(
            fw_seq / runs[best[name]], 2)
    result["clip_length_vs_window_30s_speedup_best_batch"] = round(
        seconds["window_30s"][best["window_30s"]] / seconds["clip_length"][best["clip_length"]], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
