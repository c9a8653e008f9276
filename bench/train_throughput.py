"""Training throughput: batching + frozen-encoder feature cache, against batch size 1 with the encoder run
every step (how the seed projects train). Same model, same data, same machine, one run.

    python bench/train_throughput.py [--steps 12] [--batch 16]

Model: the packaged Whisper tiny.en encoder (real weights, frozen, 30 s windows as Whisper requires), a
stack-4 MLP connector, and a random 6-layer Llama of width 512 with a 32k vocabulary (TinyLlama's
vocabulary size) trained in full. Data: 3-6 s clips with short transcripts.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from speechllm.config import from_dict  # noqa: E402
from speechllm.data.toy import build_tone_corpus  # noqa: E402
from speechllm.pretrained import packaged_whisper_path  # noqa: E402
from speechllm.testing import tiny_llm_config  # noqa: E402
from speechllm.training.config import TrainConfig  # noqa: E402
from speechllm.training.trainer import Trainer  # noqa: E402


def recipe(out: Path, manifest: Path, stages: list[dict], cache: bool) -> TrainConfig:
    llm = tiny_llm_config(32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=6,
                          num_attention_heads=8, num_key_value_heads=8, initializer_range=0.02)
    return from_dict(TrainConfig, dict(
        model={"encoder": {"family": "whisper", "name_or_path": str(packaged_whisper_path("tiny.en"))},
               "connector": {"type": "stack_mlp", "options": {"stack": 4}},
               "llm": {"hf_config": llm, "train": "full"}},
        tokenizer="tiny", data={"sources": [{"manifest": str(manifest), "task": "asr"}]},
        stages=stages, output_dir=str(out), precision="fp32", feature_cache=cache,
        save_every=0, log_every=10**9, report_to=[], eval_samples=0,
    ))


def stage(name, steps, batch):
    return {"name": name, "trains": ["connector", "llm"], "steps": steps, "batch_size": batch, "lr": 1e-4}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="optimiser steps of the batched run")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        samples = args.steps * args.batch
        manifest = build_tone_corpus(tmp / "data", samples, seconds=(3.0, 6.0))
        def run(name, stages, cache):
            config = recipe(tmp / name, manifest, stages, cache)
            trainer = Trainer(config)
            trainer.train()
            return [h for h in trainer.history if "samples_per_s" in h]

        seed_way = run("seed-way", [stage("batch1", max(samples // 8, 8), 1)], cache=False)
        ours = run("ours", [stage("fill-cache", args.steps, args.batch), stage("cached", args.steps, args.batch)], cache=True)
        baseline = seed_way[-1]["samples_per_s"]
        cold, warm = ours[0]["samples_per_s"], ours[-1]["samples_per_s"]
        result = {
            "seed_way_batch1_encoder_every_step_samples_per_s": round(baseline, 2),
            f"batch{args.batch}_first_epoch_filling_cache_samples_per_s": round(cold, 2),
            f"batch{args.batch}_cached_features_samples_per_s": round(warm, 2),
            "speedup_cold": round(cold / baseline, 1),
            "speedup_cached": round(warm / baseline, 1),
        }
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
