"""The training loop, top to bottom: the model, then for each stage its optimiser, data and steps (losses,
evaluation, checkpoints), then the end of the run (training/finish.py).

Runs alone or under `accelerate launch --num_processes N` (data-parallel; accelerate owns the
process group); with `distributed: fsdp` each process holds a shard of the model (sharding.py).
Each optimiser step sees `world * batch_size * grad_accum` examples; losses are sums
over answer tokens divided by the answer tokens of the whole global batch, so N processes compute the
same update as one process with the same global batch.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import parse_flag_from_env, set_seed
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_scheduler

from ..audio import load_conversation_audio
from ..errors import ConfigError
from ..model_files import reading_model
from ..models import SpeechLLMForConditionalGeneration
from .batches import StepBatches, collate_examples, step_loader, to_device
from .checkpoints import ResumePoint, resume_point, save_checkpoint
from .config import StageConfig, TrainConfig
from .datasets import RunDatasets, eval_batch_size, step_plan
from .feature_cache import FeatureCache
from .finish import finish_run
from .losses import LossConfig, loss_sums
from .precision import forget_other_precision, resolve_precision
from .sharding import (
    SHARDED_STATE,
    fsdp_plugin,
    full_state_dict,
    is_sharded,
    load_sharded_state,
    save_sharded_state,
    shard_model,
)

# logging.getLogger(__name__) wrapped by accelerate so that only the main process logs.
logger = get_logger(__name__)


def build_model(config: TrainConfig) -> SpeechLLMForConditionalGeneration:
    """The recipe's model, with pretrained parts from their paths or random ones from configs. `tokenizer` (for an
    LLM built from `hf_config`) is a hub id or a folder holding a tokenizer saved with `save_pretrained`."""
    tokenizer = None
    if config.tokenizer is not None:
        try:
            with reading_model(config.tokenizer, "tokenizer"):
                tokenizer = AutoTokenizer.from_pretrained(config.tokenizer, trust_remote_code=False)
        except (OSError, ValueError) as error:
            if isinstance(error, ConfigError):  # a damaged file or remote code, named by reading_model
                raise
            raise ConfigError(f"tokenizer {config.tokenizer!r}: not a folder with a saved tokenizer, nor a hub id "
                              f"that can be loaded ({error})") from None
    return SpeechLLMForConditionalGeneration.from_spec(config.model, tokenizer=tokenizer)


def set_trainable(model: SpeechLLMForConditionalGeneration, parts: list[str]) -> list[torch.nn.Parameter]:
    """Make exactly `parts` train (LoRA adapters only, where a part has them). Returns the trained params."""
    modules = {"encoder": model.encoder, "connector": model.connector, "llm": model.language_model}
    model.requires_grad_(False)
    for part in parts:
        params = dict(modules[part].named_parameters())
        adapters = {n: p for n, p in params.items() if "lora_" in n}
        for p in (adapters or params).values():
            p.requires_grad_(True)
    trained = [p for p in model.parameters() if p.requires_grad]
    if not trained:
        raise ConfigError(f"stage trains {parts} but they have no parameters")
    return trained


class Trainer:
    def __init__(self, config: TrainConfig, model=None):
        self.config = config
        self.output_dir = Path(config.output_dir)
        in_the_way = next((p for p in [self.output_dir, *self.output_dir.parents]
                           if p.exists() and not p.is_dir()), None)
        if in_the_way is not None:  # before building anything: mkdir would fail with FileExistsError
            raise ConfigError(f"output_dir {str(self.output_dir)!r}: {str(in_the_way)!r} is a file, not a folder; "
                              "pick another output_dir")
        precision = resolve_precision(config.precision)
        set_seed(config.seed)
        self.model = model or build_model(config)
        # An accelerate config with distributed_type FSDP (recipes/accelerate/fsdp.yaml) asks for the same.
        self.sharded = config.distributed == "fsdp" or parse_flag_from_env("ACCELERATE_USE_FSDP")
        encoder_trains = any("encoder" in stage.trains for stage in config.stages)
        gpu = torch.cuda.is_available()
        forget_other_precision("no" if precision == "fp32" else precision)
        self.accelerator = Accelerator(
            # Without a GPU, processes started by `accelerate launch --multi_gpu` (torchrun) join over gloo.
            cpu=not gpu,
            mixed_precision="no" if precision == "fp32" else precision,
            log_with=[r for r in config.report_to if r in ("tensorboard", "wandb")] or None,
            project_dir=str(self.output_dir),
            # One scheduler step per optimiser step: accelerate would step it once per process (it assumes the
            # steps of a stage shrink with the process count; here they do not), ending N-process schedules early.
            step_scheduler_with_optimizer=False,
            fsdp_plugin=fsdp_plugin(self.model, encoder_trains) if self.sharded and gpu else None,
        )
        self.processor = self.model.processor
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        # accelerate ignores FSDP on CPUs (it would run DDP): shard with torch's fully_shard here instead.
        self.shards_locally = self.sharded and not gpu and self.world > 1
        if self.shards_locally:
            shard_model(self.model, encoder_trains)
        elif self.sharded and gpu and not encoder_trains:
            self.model.encoder.to(self.accelerator.device)  # left out of the shards, so fully_shard does not move it
        self.datasets = RunDatasets(config, self.model.metadata_schema)
        self.history: list[dict] = []
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.accelerator.log_with:
            self.accelerator.init_trackers("speechllm")

    def train(self, resume: bool = False) -> Path:
        """Run every stage (from the last checkpoint when `resume`), then finish; returns the final model's folder."""
        start = ResumePoint()
        if resume:
            start = resume_point(self.output_dir)
            if start.checkpoint is None:
                logger.info("no checkpoint to resume from; starting afresh")
            else:
                logger.info(f"resuming from {start.checkpoint} (stage {start.stage}, step {start.step})")
                self.history = start.history
        self.eval_set = self.datasets.for_evaluation()  # one eval set scores every stage
        for index in range(start.stage, len(self.config.stages)):
            resuming = index == start.stage
            self.run_stage(index, self.config.stages[index], start.step if resuming else 0,
                           start.checkpoint if resuming else None)
        return self.finish()

    def run_stage(self, index: int, stage: StageConfig, start_step: int, checkpoint: Path | None):
        acc = self.accelerator
        acc.free_memory()  # forget the previous stage's prepared model and optimiser
        trained = set_trainable(self.model, stage.trains)
        self.model.train()
        # Fused: one kernel for all weights instead of a dozen per weight (several times faster on a CPU).
        optimizer = torch.optim.AdamW(trained, lr=stage.lr, weight_decay=stage.weight_decay, fused=True)
        scheduler = get_scheduler(stage.schedule, optimizer, stage.warmup_steps, stage.steps)
        if self.shards_locally:  # accelerate would wrap the sharded model in DDP; the optimiser is saved sharded
            model, scheduler = self.model, acc.prepare(scheduler)
        else:
            model, optimizer, scheduler = acc.prepare(self.model, optimizer, scheduler)
            trained = [p for p in model.parameters() if p.requires_grad]  # FSDP replaces them with shards
        if checkpoint is not None:
            acc.load_state(str(checkpoint))
            if self.shards_locally:
                load_sharded_state(model, optimizer, checkpoint / SHARDED_STATE)
        cache = None
        if self.config.feature_cache and not any(p.requires_grad for p in self.model.encoder.parameters()):
            cache = FeatureCache(self.output_dir / "feature-cache", self.model.encoder)

        dataset = self.datasets.for_stage(index, stage, self.world)
        plan = step_plan(dataset, stage, self.config.seed, self.rank, self.world)
        steps = StepBatches(self.processor, dataset, plan, stage.loss.distills)
        bar = tqdm(range(start_step, stage.steps), desc=f"{stage.name}", disable=not acc.is_local_main_process,
                   initial=start_step, total=stage.steps)
        started, seen = time.time(), 0
        for step, micro in zip(bar, step_loader(steps, start_step, self.config.num_workers)):
            tokens = acc.reduce(torch.tensor(float(sum(m["tokens"] for m in micro)), device=acc.device), "sum")
            scale = self.world / tokens.clamp_min(1)
            logged = {"cross_entropy": torch.zeros((), device=acc.device)}
            for k, batch in enumerate(micro):
                batch = {"student": to_device(batch["student"], acc.device),
                         "teacher": to_device(batch["teacher"], acc.device)}
                # Gradients are exchanged between processes once per step, after its last micro-batch.
                sync = contextlib.nullcontext() if k == len(micro) - 1 else acc.no_sync(model)
                with sync, acc.autocast():
                    sums = loss_sums(model, batch, stage.loss, cache)
                    acc.backward(stage.loss.weighted(sums) * scale)
                for name, value in sums.items():
                    # This process's share of the global mean; the shares of all processes add up to it.
                    logged[name] = logged.get(name, 0.0) + value.detach().float() * scale / self.world
            grad_norm = acc.clip_grad_norm_(trained, stage.max_grad_norm) if stage.max_grad_norm else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            logged = {name: float(acc.reduce(value, "sum")) for name, value in logged.items()}
            seen += sum(len(rows) for rows in plan[step]) * self.world
            done = step + 1
            record = {"stage": stage.name, "step": done, "lr": scheduler.get_last_lr()[0],
                      "loss": float(stage.loss.weighted(logged)), **logged,
                      "samples_per_s": seen / max(time.time() - started, 1e-9)}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            if done % self.config.log_every == 0 or done == stage.steps:
                self.history.append(record)
                acc.log({f"{stage.name}/{k}": v for k, v in record.items() if isinstance(v, (int, float))},
                        step=index * 10**6 + done)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            if (self.config.eval_every and done % self.config.eval_every == 0) or done == stage.steps:
                self.report_evaluation(model, stage, index, done, cache)
            if (self.config.save_every and done % self.config.save_every == 0) or done == stage.steps:
                also = ((lambda folder: save_sharded_state(model, optimizer, folder / SHARDED_STATE))
                        if self.shards_locally else None)
                save_checkpoint(acc, self.output_dir, index, done, self.history, self.config.keep_checkpoints, also)
        if cache is not None:
            self.history.append({"stage": stage.name, "feature_cache_hits": cache.hits,
                                 "feature_cache_misses": cache.misses})
            logger.info(f"feature cache: {cache.hits} hits, {cache.misses} misses")
        self.model = acc.unwrap_model(model)

    def report_evaluation(self, model, stage: StageConfig, index: int, done: int, cache: FeatureCache | None):
        """Evaluate, and record the result in the history, the trackers and the log."""
        result = self.evaluate(model, cache)
        if not result:
            return
        self.history.append({"stage": stage.name, "step": done, **result})
        self.accelerator.log({f"{stage.name}/eval_loss": result["eval_loss"]}, step=index * 10**6 + done)
        logger.info(f"[{stage.name} step {done}] eval loss {result['eval_loss']:.4f}")
        for sample in result.get("samples", []):
            logger.info(f"  reference: {sample['reference']!r}\n  generated: {sample['generated']!r}")

    @torch.no_grad()
    def evaluate(self, model, cache: FeatureCache | None) -> dict:
        """Cross-entropy per answer token over the eval set (all processes together), and sample answers."""
        if self.eval_set is None:
            return {}
        # The unwrapped model: processes may run different numbers of batches, and a wrapped (DDP)
        # forward would wait for the others.
        model = self.accelerator.unwrap_model(model)
        model.eval()
        size, batch_size = len(self.eval_set), eval_batch_size(self.config)
        totals = torch.zeros(2)
        starts = list(range(self.rank * batch_size, size, batch_size * self.world))
        # A sharded forward is a collective: every process runs as many as the busiest, the extra ones uncounted.
        rounds = -(-size // (batch_size * self.world)) if self.sharded else len(starts)
        for round_ in range(rounds):
            start = starts[round_] if round_ < len(starts) else 0
            examples = [self.eval_set[i] for i in range(start, min(start + batch_size, size))]
            batch = collate_examples(self.processor, examples)
            batch["student"] = to_device(batch["student"], self.accelerator.device)
            sums = loss_sums(model, batch, LossConfig(), cache)
            if round_ < len(starts):
                totals += torch.tensor([float(sums["cross_entropy"]), batch["tokens"]])
        totals = self.accelerator.reduce(totals.to(self.accelerator.device), "sum").cpu()
        result = {"eval_loss": float(totals[0] / max(totals[1], 1))}
        # Generation runs parts of a sharded model outside its forward: samples come from unsharded runs only.
        if self.accelerator.is_main_process and self.config.eval_samples and not is_sharded(model):
            result["samples"] = self.sample_answers(model, self.config.eval_samples)
        model.train()
        return result

    def sample_answers(self, model, count: int) -> list[dict]:
        """Greedy answers to the first held-out prompts, beside their references."""
        samples = []
        for i in range(min(count, len(self.eval_set))):
            conversation = self.eval_set[i].conversation
            prompt, reference = conversation[:-1], conversation[-1]["content"]
            prompt = load_conversation_audio(prompt, **self.processor.audio_limits)
            batch = to_device(self.processor([prompt]), self.accelerator.device)
            tokens = model.generate(**batch, max_new_tokens=64, do_sample=False)
            samples.append({"reference": reference, "generated": self.processor.decode(tokens)[0]})
        return samples

    def unsharded_copy(self, state: dict) -> SpeechLLMForConditionalGeneration:
        """A whole model holding the gathered weights `state`, with the last stage's parts trainable (so a
        trainable-only save writes what trained), for the end-of-run steps."""
        model = SpeechLLMForConditionalGeneration(self.model.config)
        model.load_state_dict(state)
        model.processor = self.processor
        set_trainable(model, self.config.stages[-1].trains)
        return model

    def finish(self) -> Path:
        """The end-of-run step (adapter scaling, attribute heads, final save) on the main process."""
        self.accelerator.wait_for_everyone()
        if is_sharded(self.model):
            state = full_state_dict(self.model)  # every process sends its shards; the main one gets the tensors
            if self.accelerator.is_main_process:
                self.model = self.unsharded_copy(state)
        if self.accelerator.is_main_process:
            finish_run(self.model, self.config, self.history)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return self.output_dir / "final"


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train a model from a recipe; returns the final model's directory."""
    return Trainer(config).train(resume=resume)
