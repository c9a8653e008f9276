"""Training throughput: batching + frozen-encoder feature cache, against batch size 1 with the encoder run
every step (how the seed projects train). Same model, same data, same machine, one run, for two models:

    python bench/train_throughput.py [--steps 4] [--batch 16] [--models prefix_llama default_recipe]

- prefix_llama: the packaged Whisper tiny.en encoder (real weights, frozen, 30 s windows as Whisper
  requires), a stack-4 MLP connector, and a random 6-layer Llama of width 512 with a 32k vocabulary
  (TinyLlama's vocabulary size) trained in full. Data: 3-6 s tones with one-word transcripts (ASR).
- default_recipe: the model section of speechllm/recipes/default.yaml, built as the trainer builds it (Whisper tiny.en
  whose own decoder reads the frozen encoder by cross-attention, LoRA r16 on the decoder), trained with
  that recipe's data mix (metadata and ASR tasks) on a small espeak-ng corpus built here.

Both arms of a model run the same model code and config; they differ only in batch size and feature cache.
Throughput is steady-state: each stage's first step, which also pays one-time costs (optimiser state,
kernel setup), is left out of its timing. Precision is the trainer's "auto": fp32 on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from speechllm.config import from_dict  # noqa: E402
from speechllm.data.toy import build_tone_corpus  # noqa: E402
from speechllm.pretrained import packaged_whisper_path  # noqa: E402
from speechllm.testing import tiny_llm_config, tiny_tokenizer  # noqa: E402
from speechllm.training.config import StageConfig, TrainConfig, load_train_config  # noqa: E402
from speechllm.training.trainer import Trainer  # noqa: E402

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "speechllm" / "recipes" / "default.yaml"


def prefix_llama(tmp: Path, clips: int) -> tuple[TrainConfig, StageConfig]:
    """The prefix-Llama recipe on a tone corpus, and the stage both arms run (steps and batch set later)."""
    manifest = build_tone_corpus(tmp / "tones", clips, seconds=(3.0, 6.0))
    tiny_tokenizer().save_pretrained(tmp / "tokenizer")
    llm = tiny_llm_config(32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=6,
                          num_attention_heads=8, num_key_value_heads=8, initializer_range=0.02)
    config = from_dict(TrainConfig, dict(
        model={"encoder": {"family": "whisper", "name_or_path": str(packaged_whisper_path("tiny.en"))},
               "connector": {"type": "stack_mlp", "options": {"stack": 4}},
               "llm": {"hf_config": llm, "train": "full"}},
        tokenizer=str(tmp / "tokenizer"), data={"sources": [{"manifest": str(manifest), "task": "asr"}]},
        precision="fp32",
    ))
    return config, StageConfig(trains=["connector", "llm"], lr=1e-4)


def default_recipe(tmp: Path, clips: int) -> tuple[TrainConfig, StageConfig]:
    """The default recipe with its manifests pointed at a small espeak-ng corpus, and its first stage."""
    from speechllm.data.synth.corpus import build_corpus

    corpus = build_corpus(tmp / "synth", clips, workers=1, voices=["espeak:"], splits=(1.0, 0.0, 0.0), progress=False)
    config = load_train_config(DEFAULT_RECIPE)
    for source in config.data["sources"]:
        source["manifest"] = str(corpus / "train.jsonl")
    # Evaluation and the attribute heads fitted after training are not training steps.
    config = dataclasses.replace(config, eval_data=None, heads={}, precision="auto")
    return config, config.stages[0]


MODELS = {"prefix_llama": prefix_llama, "default_recipe": default_recipe}


def steady_samples_per_s(history: list[dict], stage: str, batch: int) -> float:
    """Samples per second over a stage's steps after its first (the trainer logs every step here)."""
    records = [h for h in history if h.get("stage") == stage and "samples_per_s" in h]
    first, last = records[0], records[-1]
    # The trainer's samples_per_s is samples since the stage began over seconds since it began.
    def elapsed(record: dict) -> float:
        return record["step"] * batch / record["samples_per_s"]

    return (last["step"] - first["step"]) * batch / (elapsed(last) - elapsed(first))


def measure(config: TrainConfig, stage: StageConfig, out: Path, steps: int, batch: int) -> dict:
    def run(directory: str, stage: StageConfig, cache: bool) -> list[dict]:
        run_config = dataclasses.replace(config, stages=[stage], output_dir=str(out / directory), feature_cache=cache,
                                         save_every=0, log_every=1, report_to=[], eval_samples=0)
        trainer = Trainer(run_config)
        trainer.train()
        return trainer.history

    seed_steps = max(steps * batch // 8, 8)
    seed_way = run("seed-way", dataclasses.replace(stage, name="batch1", steps=seed_steps, batch_size=1), False)
    # The same run twice in one directory: the first fills the feature cache, the second (the same examples,
    # as a later epoch would see them) reads it.
    def batched(name: str) -> StageConfig:
        return dataclasses.replace(stage, name=name, steps=steps, batch_size=batch)

    cold_run = run("ours", batched("fill-cache"), True)
    warm_run = run("ours", batched("cached"), True)
    baseline = steady_samples_per_s(seed_way, "batch1", 1)
    cold, warm = steady_samples_per_s(cold_run, "fill-cache", batch), steady_samples_per_s(warm_run, "cached", batch)
    cache = next(h for h in warm_run if "feature_cache_misses" in h)
    return {
        "seed_way_batch1_encoder_every_step_samples_per_s": round(baseline, 3),
        f"batch{batch}_first_epoch_filling_cache_samples_per_s": round(cold, 3),
        f"batch{batch}_cached_features_samples_per_s": round(warm, 3),
        "cached_run_feature_cache_hits_misses": [cache["feature_cache_hits"], cache["feature_cache_misses"]],
        "speedup_cold": round(cold / baseline, 1),
        "speedup_cached": round(warm / baseline, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps of each batched stage")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: each stage's first step is left out of the timing")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            config, stage = MODELS[name](Path(tmp) / name, args.steps * args.batch)
            results[name] = measure(config, stage, Path(tmp) / name, args.steps, args.batch)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
