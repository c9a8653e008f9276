"""Where a gemma_bridge training step's time goes, by torch.profiler: Whisper transcribing, the bridge, Gemma's
forward (the student reading the bridged audio, the teacher reading the transcript), the backward pass, the
optimiser, and the rest (data, losses, logging):

    python bench/train_step_profile.py [--steps 4] [--batch 4] [--precision fp32] [--cached] [--passages F]

The trainer runs as is; the profiler records the steps after the first two (one-time costs, then a warm-up
step), split at each optimiser step. Without --cached Whisper transcribes every clip (the first epoch);
with it the clips are transcribed in an unprofiled run first, and the profiled run reads them from the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile, record_function, schedule
from train_throughput import gemma_bridge, run_config, train

from speechllm.training.trainer import Trainer


def label(module: torch.nn.Module, name) -> None:
    """Record each forward of `module` as a profiler range named `name()` (called when the forward starts)."""
    open_ranges = []
    module.register_forward_pre_hook(lambda m, args: open_ranges.append(record_function(name()).__enter__()))
    module.register_forward_hook(lambda m, args, out: open_ranges.pop().__exit__(None, None, None))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps in all; the first two are not profiled")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--cached", action="store_true", help="profile steps that read transcripts from the cache")
    parser.add_argument("--passages", type=Path, help="a passages tasks manifest (default: a few spoken here)")
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3: the first two steps are not profiled")
    with tempfile.TemporaryDirectory() as tmp:
        config, stage = gemma_bridge(Path(tmp), args.steps * args.batch, args.passages)
        stage = dataclasses.replace(stage, steps=args.steps, batch_size=args.batch)
        config = dataclasses.replace(config, precision=args.precision)
        if args.cached:
            train(config, stage, Path(tmp) / "run", cache=True)
        trainer = Trainer(run_config(config, stage, Path(tmp) / "run", cache=args.cached))
        model = trainer.model
        label(model.encoder, lambda: "whisper transcribe")
        label(model.connector, lambda: "bridge forward")
        # The model runs Gemma's layers and its output head apart (logits at answer positions only).
        label(model.language_model.get_decoder(),
              lambda: "gemma forward, student" if torch.is_grad_enabled() else "gemma forward, teacher")
        label(model.language_model.get_output_embeddings(), lambda: "gemma output head")
        ends = []
        with profile(activities=[ProfilerActivity.CPU],
                     schedule=schedule(wait=1, warmup=1, active=args.steps - 2)) as profiler:
            def step_ended(optimizer, a, k):
                ends.append(time.perf_counter())
                profiler.step()

            handle = register_optimizer_step_post_hook(step_ended)
            try:
                trainer.train()
            finally:
                handle.remove()
    totals = {}
    for event in profiler.key_averages():
        if event.key.startswith("autograd::engine::evaluate_function"):
            part = "backward"
        elif event.key.startswith("Optimizer."):
            part = "optimiser (AdamW step, zero_grad)"
        elif event.key.startswith(("whisper", "bridge", "gemma")):
            part = event.key
        else:
            continue
        totals[part] = totals.get(part, 0.0) + event.cpu_time_total / 1e6
    wall = ends[-1] - ends[1]
    totals["rest: data, losses, logging"] = wall - sum(totals.values())
    steps = args.steps - 2
    print(f"gemma_bridge, batch {args.batch}, {args.precision}, {'cached' if args.cached else 'uncached'} features, "
          f"{torch.get_num_threads()} threads: {wall / steps:.2f} s per step over {steps} profiled steps")
    print("| part | s per step | share |\n| --- | --- | --- |")
    for part, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"| {part} | {seconds / steps:.2f} | {100 * seconds / wall:.0f}% |")


if __name__ == "__main__":
    main()
