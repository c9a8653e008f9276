"""Training throughput and model FLOPs utilisation: batching + frozen-encoder feature cache, against batch size 1
with the encoder run every step (how the seed projects train). Same model, same data, same machine, one run:

    python bench/train_throughput.py [--steps 4] [--batch N] [--models ...] [--precisions fp32 bf16] [--passages F]

- prefix_llama: the packaged Whisper tiny.en encoder (real weights, frozen, 30 s windows as Whisper
  requires), a stack-4 MLP connector, and a random 6-layer Llama of width 512 with a 32k vocabulary
  (TinyLlama's vocabulary size) trained in full. Data: 3-6 s tones with one-word transcripts (ASR). Batch 16.
- default_recipe: the model section of speechllm/recipes/default.yaml, built as the trainer builds it (Whisper tiny.en
  whose own decoder reads the frozen encoder by cross-attention, LoRA r16 on the decoder), trained with
  that recipe's data mix (metadata and ASR tasks) on a small espeak-ng corpus built here. Batch 16.
- gemma_bridge: speechllm/recipes/gemma_bridge.yaml (Whisper tiny.en transcribing greedily, the token bridge trained,
  Gemma 3 270M frozen; cross-entropy plus distillation from Gemma reading the transcript), batch 4 as in the recipe,
  on one row per passage (a question or the summary) of `--passages` (default: a few spoken here with espeak-ng).

Both arms of a model run the same model code and config; they differ only in batch size and feature cache.
Throughput is steady-state: each stage's first step, which also pays one-time costs (optimiser state,
kernel setup), is left out of its timing. Each arm runs in every precision asked for (bf16 autocast where the
machine computes bf16 natively).

MFU = FLOPs per step / seconds per step / peak FLOP/s of that precision. FLOPs are counted, not estimated: torch's
FlopCounterMode over a separate run of the same steps on the same batches, forward and backward, so frozen weights,
whose gradients are never computed, add nothing. The peak is the best sustained rate of square matmuls (1024-4096)
in that precision, measured in this process with its threads, before and after the runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from speechllm.config import from_dict  # noqa: E402
from speechllm.data.toy import build_tone_corpus  # noqa: E402
from speechllm.pretrained import packaged_whisper_path  # noqa: E402
from speechllm.pretrained.precision import cpu_has_native_bf16  # noqa: E402
from speechllm.testing import tiny_llm_config, tiny_tokenizer  # noqa: E402
from speechllm.training.config import StageConfig, TrainConfig, load_train_config  # noqa: E402
from speechllm.training.flops import flops_per_optimizer_step, matmul_peak  # noqa: E402
from speechllm.training.trainer import Trainer  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "speechllm" / "recipes"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def prefix_llama(tmp: Path, clips: int, passages: Path | None) -> tuple[TrainConfig, StageConfig]:
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
    ))
    return config, StageConfig(trains=["connector", "llm"], lr=1e-4)


def default_recipe(tmp: Path, clips: int, passages: Path | None) -> tuple[TrainConfig, StageConfig]:
    """The default recipe with its manifests pointed at a small espeak-ng corpus, and its first stage."""
    from speechllm.data.synth.corpus import build_corpus

    corpus = build_corpus(tmp / "synth", clips, workers=1, voices=["espeak:"], splits=(1.0, 0.0, 0.0), progress=False)
    config = load_train_config(RECIPES / "default.yaml")
    for source in config.data["sources"]:
        source["manifest"] = str(corpus / "train.jsonl")
    # Evaluation and the attribute heads fitted after training are not training steps.
    config = dataclasses.replace(config, eval_data=None, heads={})
    return config, config.stages[0]


def gemma_bridge(tmp: Path, clips: int, passages: Path | None) -> tuple[TrainConfig, StageConfig]:
    """The gemma_bridge recipe on `clips` rows of the passages manifest `passages` (None: spoken here)."""
    if passages is None:
        from speechllm.data.synth.passages import build_passages

        folder = build_passages(tmp / "passages", clips, workers=1, voices=["espeak:"], splits=(1.0, 0.0, 0.0),
                                progress=False)
        passages = folder / "train-tasks.jsonl"
    manifest = tmp / "train-tasks.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("".join(json.dumps(row) + "\n" for row in passage_rows(passages, clips)))
    config = load_train_config(RECIPES / "gemma_bridge.yaml")
    config.data["sources"] = [{"manifest": str(manifest)}]
    config = dataclasses.replace(config, eval_data=None, heads={})
    return config, config.stages[0]


def passage_rows(manifest: Path, count: int) -> list[dict]:
    """One row for each of the first `count` passages of a tasks manifest (distinct audio, so a cold feature cache
    transcribes every clip), a question and the summary in turn, audio paths made absolute: a manifest's paths are
    relative to its own folder."""
    by_audio: dict[str, list[dict]] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_audio.setdefault(row["audio"], []).append(row)
    rows = []
    for i, group in enumerate(list(by_audio.values())[:count]):
        row = dict(group[-1] if i % 2 else group[0])
        row["audio"] = str((manifest.parent / row["audio"]).resolve())
        rows.append(row)
    return rows


MODELS = {"prefix_llama": prefix_llama, "default_recipe": default_recipe, "gemma_bridge": gemma_bridge}
BATCH = {"prefix_llama": 16, "default_recipe": 16, "gemma_bridge": 4}


def steady_window(history: list[dict], stage: str, batch: int) -> tuple[int, float]:
    """(samples, seconds) of a stage's steps after its first (the trainer logs every step here)."""
    records = [h for h in history if h.get("stage") == stage and "samples_per_s" in h]
    first, last = records[0], records[-1]
    # The trainer's samples_per_s is samples since the stage began over seconds since it began.
    def elapsed(record: dict) -> float:
        return record["step"] * batch / record["samples_per_s"]

    return (last["step"] - first["step"]) * batch, elapsed(last) - elapsed(first)


def arms(stage: StageConfig, steps: int, batch: int) -> list[tuple[str, str, StageConfig, bool]]:
    """(arm, run folder, stage, feature cache) of the three runs of a model, in the order they must run: the
    batched runs share a folder, so the first fills the feature cache and the second (the same examples, as a later
    epoch would see them) reads it."""
    seed_steps = max(steps * batch // 8, 8)
    batched = dataclasses.replace(stage, steps=steps, batch_size=batch)
    return [("batch 1, encoder every step", "seed-way",
             dataclasses.replace(stage, name="batch1", steps=seed_steps, batch_size=1), False),
            (f"batch {batch}, filling the cache", "ours", dataclasses.replace(batched, name="fill-cache"), True),
            (f"batch {batch}, cached features", "ours", dataclasses.replace(batched, name="cached"), True)]


def run_config(config: TrainConfig, stage: StageConfig, out: Path, cache: bool) -> TrainConfig:
    """`config` running `stage` alone into `out`, logging every step, with no checkpoints or samples on the way."""
    return dataclasses.replace(config, stages=[stage], output_dir=str(out), feature_cache=cache,
                               save_every=0, log_every=1, report_to=[], eval_samples=0)


def train(config: TrainConfig, stage: StageConfig, out: Path, cache: bool) -> list[dict]:
    trainer = Trainer(run_config(config, stage, out, cache))
    trainer.train()
    return trainer.history


def measure(config: TrainConfig, stage: StageConfig, out: Path, steps: int, batch: int, precision: str) -> list[dict]:
    """One row per arm in `precision`: samples/s, speedup over batch 1, counted FLOPs per step, achieved FLOP/s.
    Run it in a fresh process: accelerate allows one mixed precision per process."""
    config = dataclasses.replace(config, precision=precision)
    out = out / precision
    rows, baseline = [], None
    for arm, folder, arm_stage, cache in arms(stage, steps, batch):
        # Counted and timed apart: counting slows every operation down. Same seed, so the same batches.
        with flops_per_optimizer_step() as counted:
            train(config, arm_stage, out / "counted" / folder, cache)
        history = train(config, arm_stage, out / folder, cache)
        samples, seconds = steady_window(history, arm_stage.name, arm_stage.batch_size)
        timed = counted[1:]  # the timed steps: all but the first
        baseline = baseline or samples / seconds
        hits = next((h for h in history if "feature_cache_hits" in h), None)
        rows.append({"precision": precision, "arm": arm, "samples_per_s": samples / seconds,
                     "speedup": samples / seconds / baseline, "flops_per_step": sum(timed) / len(timed),
                     "flops_per_s": sum(timed) / seconds,
                     "cache": f"{hits['feature_cache_hits']}/{hits['feature_cache_misses']}" if hits else "-"})
    return rows


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def bf16_is_native() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def main():
    native = ["fp32", "bf16"] if bf16_is_native() else ["fp32"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps of each batched stage")
    parser.add_argument("--batch", type=int, help="batch size of the batched arms (default: 16; gemma_bridge 4)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--precisions", nargs="+", choices=native, default=native,
                        help=f"default: those this machine computes natively ({', '.join(native)})")
    parser.add_argument("--passages", type=Path, help="a passages tasks manifest for gemma_bridge (`speechllm data "
                        "passages DIR` writes DIR/train-tasks.jsonl); default: a few spoken here")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: each stage's first step is left out of the timing")
    if args.passages is not None and not args.passages.is_file():
        parser.error(f"--passages {args.passages}: no such file")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peaks = {p: matmul_peak(DTYPES[p], device) for p in args.precisions}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            batch = args.batch or BATCH[name]
            config, stage = MODELS[name](Path(tmp) / name, args.steps * batch, args.passages)
            for precision in args.precisions:
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
                    rows = fresh.submit(measure, config, stage, Path(tmp) / name, args.steps, batch, precision)
                    results += [(name, row) for row in rows.result()]
    # Measured again at the end: the best of both is the peak, in case other work slowed one of them.
    peaks = {p: max(peak, matmul_peak(DTYPES[p], device)) for p, peak in peaks.items()}
    print(f"matmul peak on {device}, {torch.get_num_threads()} threads: "
          + ", ".join(f"{p} {peak / 1e9:.0f} GFLOP/s" for p, peak in peaks.items()))
    print(table(["model", "precision", "arm", "samples/s", "vs batch 1", "cache hits/misses", "GFLOP/step",
                 "GFLOP/s", "MFU"],
                [[name, row["precision"], row["arm"], f"{row['samples_per_s']:.2f}", f"{row['speedup']:.1f}x",
                  row["cache"], f"{row['flops_per_step'] / 1e9:.1f}", f"{row['flops_per_s'] / 1e9:.1f}",
                  f"{100 * row['flops_per_s'] / peaks[row['precision']]:.1f}%"] for name, row in results]))

if __name__ == "__main__":
    main()
