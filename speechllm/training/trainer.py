"""The training loop, top to bottom: stages, batches, losses, evaluation, checkpoints, resume.

Runs alone or under `accelerate launch --num_processes N` (data-parallel; accelerate owns the
process group). Each optimiser step sees `world * batch_size * grad_accum` examples; losses are sums
over answer tokens divided by the answer tokens of the whole global batch, so N processes compute the
same update as one process with the same global batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_scheduler

from ..audio import load_conversation_audio
from ..errors import ConfigError
from ..models import SpeechLLMForConditionalGeneration, logits_at
from .batches import StepBatches, collate_examples, step_loader, to_device
from .config import StageConfig, TrainConfig
from .feature_cache import FeatureCache
from .losses import LossConfig, answer_positions, cross_entropy_sum, distillation_sums

STATE_FILE = "trainer_state.json"


def build_model(config: TrainConfig) -> SpeechLLMForConditionalGeneration:
    """The recipe's model, with pretrained parts from their paths or random ones from configs."""
    tokenizer = None
    if config.tokenizer == "tiny":
        from ..testing import tiny_tokenizer

        tokenizer = tiny_tokenizer()
    elif config.tokenizer is not None:
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
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


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo (Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str) -> str:
    """The precision to train in: "auto" is bf16 on a GPU that has it, else fp32; half precision asked for on a
    CPU without native support for it falls back to fp32, saying so."""
    if requested == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if requested != "fp32" and not torch.cuda.is_available() and not (requested == "bf16" and cpu_has_bf16()):
        # Emulated half precision on a CPU is no saving: a bf16 convolution ran 28x slower than fp32 on an AMD
        # EPYC without avx512_bf16. The recipe's numbers stay the same; only the arithmetic changes.
        print(f"precision {requested}: this CPU has no native support for it; training in fp32", flush=True)
        return "fp32"
    return requested


def encoder_is_frozen(model) -> bool:
    return not any(p.requires_grad for p in model.encoder.parameters())


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
        self.accelerator = Accelerator(
            # Without a GPU, processes started by `accelerate launch --multi_gpu` (torchrun) join over gloo.
            cpu=not torch.cuda.is_available(),
            mixed_precision="no" if precision == "fp32" else precision,
            log_with=[r for r in config.report_to if r in ("tensorboard", "wandb")] or None,
            project_dir=str(self.output_dir),
        )
        set_seed(config.seed)
        self.model = model or build_model(config)
        self.processor = self.model.processor
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.history: list[dict] = []
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.accelerator.log_with:
            self.accelerator.init_trackers("speechllm")

    # -- data ------------------------------------------------------------------------------------
    def dataset(self, stage: StageConfig, index: int, num_samples: int):
        from ..data.mixing import DataConfig, MixedDataset

        data = DataConfig.from_dict(stage.data if stage.data is not None else self.config.data)
        schema = self.model.config.model_spec.metadata_schema
        return MixedDataset(data, num_samples=num_samples, seed=self.config.seed + index, schema=schema)

    def step_batches(self, dataset, stage: StageConfig) -> list[list[list[int]]]:
        """For every optimiser step, this process's micro-batches of dataset indices.

        Global batches group clips of similar duration (less padding); their rows are dealt to
        processes in turn, so every process gets a share of each global batch.
        """
        from ..data.mixing import length_buckets

        global_batch = stage.batch_size * self.world
        buckets = length_buckets(dataset.durations(), global_batch, seed=self.config.seed)
        steps = []
        for start in range(0, stage.steps * stage.grad_accum, stage.grad_accum):
            micro = [buckets[(start + k) % len(buckets)] for k in range(stage.grad_accum)]
            steps.append([m[self.rank :: self.world] for m in micro])
        return steps

    # -- losses ----------------------------------------------------------------------------------
    def losses(self, model, batch: dict, loss: LossConfig, cache: FeatureCache | None) -> dict[str, torch.Tensor]:
        """Summed loss terms of one micro-batch."""
        student = dict(batch["student"])
        labels = student.pop("labels")
        if cache is not None and "audio_values" in student:
            student["audio_features"] = cache.features(student.pop("audio_values"), student.pop("audio_lengths"))
        # Logits at answer positions only: the rest carry no loss.
        out = model(**student, logits_mask=answer_positions(labels), output_hidden_states=loss.distill_hidden > 0)
        sums = {"cross_entropy": cross_entropy_sum(out.logits, labels)}
        if loss.distills:
            teacher = batch["teacher"]
            language_model = self.accelerator.unwrap_model(model).language_model
            # The teacher is the base LLM reading the transcript: adapters off, no gradients.
            adapters_off = getattr(language_model, "disable_adapter", contextlib.nullcontext)
            with torch.no_grad(), adapters_off():
                t_out = logits_at(
                    language_model, answer_positions(teacher["labels"]), input_ids=teacher["input_ids"],
                    attention_mask=teacher["attention_mask"], output_hidden_states=loss.distill_hidden > 0,
                )
            sums.update(distillation_sums(
                out.logits, t_out.logits, out.hidden_states, t_out.hidden_states, labels, teacher["labels"], loss,
            ))
        return sums

    def weighted(self, sums: dict[str, torch.Tensor], loss: LossConfig) -> torch.Tensor:
        return sum(getattr(loss, name) * value for name, value in sums.items())

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        found = [p for p in self.output_dir.glob("checkpoint-*") if (p / STATE_FILE).exists()]
        return sorted(found, key=lambda p: json.loads((p / STATE_FILE).read_text())["order"])

    def save_checkpoint(self, stage_index: int, step: int):
        """Write a checkpoint under a temporary name and rename it: a crash mid-save leaves no checkpoint
        that could be loaded, only a temporary folder that resume ignores and the next save removes."""
        name = f"checkpoint-{stage_index}-{step:07d}"
        final = self.output_dir / name
        temporary = self.output_dir / f".tmp-{name}"
        if self.accelerator.is_main_process and temporary.exists():
            shutil.rmtree(temporary)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(temporary))
        if self.accelerator.is_main_process:
            order = stage_index * 10**9 + step
            state = {"stage": stage_index, "step": step, "order": order, "history": self.history}
            (temporary / STATE_FILE).write_text(json.dumps(state))
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            for old in self.checkpoints()[: -self.config.keep_checkpoints]:
                shutil.rmtree(old)
        self.accelerator.wait_for_everyone()

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, stage: StageConfig, cache) -> dict:
        from ..data.mixing import DataConfig, MixedDataset

        if self.config.eval_data is None:
            return {}
        schema = self.model.config.model_spec.metadata_schema
        data = DataConfig.from_dict(self.config.eval_data)
        size = self.config.eval_batches * stage.batch_size
        dataset = MixedDataset(data, num_samples=size, seed=self.config.seed + 10_000, schema=schema)
        # The unwrapped model: processes may run different numbers of batches, and a wrapped (DDP)
        # forward would wait for the others.
        model = self.accelerator.unwrap_model(model)
        model.eval()
        totals = torch.zeros(2)
        for start in range(self.rank * stage.batch_size, size, stage.batch_size * self.world):
            examples = [dataset[i] for i in range(start, min(start + stage.batch_size, size))]
            batch = collate_examples(self.processor, examples)
            batch["student"] = to_device(batch["student"], self.accelerator.device)
            sums = self.losses(model, batch, LossConfig(), cache)
            totals += torch.tensor([float(sums["cross_entropy"]), batch["tokens"]])
        totals = self.accelerator.reduce(totals.to(self.accelerator.device), "sum").cpu()
        result = {"eval_loss": float(totals[0] / max(totals[1], 1))}
        if self.accelerator.is_main_process and self.config.eval_samples:
            result["samples"] = self.sample_answers(dataset, self.config.eval_samples)
        model.train()
        return result

    def sample_answers(self, dataset, count: int) -> list[dict]:
        """Greedy answers to the first held-out prompts, beside their references."""
        model = self.accelerator.unwrap_model(self.model)
        samples = []
        for i in range(min(count, len(dataset))):
            conversation = dataset[i].conversation
            prompt, reference = conversation[:-1], conversation[-1]["content"]
            prompt = load_conversation_audio(prompt, **self.processor.audio_limits)
            batch = to_device(self.processor([prompt]), self.accelerator.device)
            tokens = model.generate(**batch, max_new_tokens=64, do_sample=False)
            samples.append({"reference": reference, "generated": self.processor.decode(tokens)[0]})
        return samples

    # -- the loop --------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> Path:
        """Run every stage; returns the directory of the final model."""
        start_stage, start_step, resume_from = 0, 0, None
        if resume:
            found = self.checkpoints()
            if found:
                resume_from = found[-1]
                state = json.loads((resume_from / STATE_FILE).read_text())
                start_stage, start_step, self.history = state["stage"], state["step"], state["history"]
                self.accelerator.print(f"resuming from {resume_from} (stage {start_stage}, step {start_step})")
            else:
                self.accelerator.print("no checkpoint to resume from; starting afresh")
        for index, stage in enumerate(self.config.stages):
            if index < start_stage:
                continue
            self.run_stage(index, stage, start_step if index == start_stage else 0, resume_from if index == start_stage else None)
        return self.save_final()

    def run_stage(self, index: int, stage: StageConfig, start_step: int, resume_from: Path | None):
        acc = self.accelerator
        acc.free_memory()  # forget the previous stage's prepared model and optimiser
        trained = set_trainable(self.model, stage.trains)
        self.model.train()
        # Fused: one kernel for all weights instead of a dozen per weight (several times faster on a CPU).
        optimizer = torch.optim.AdamW(trained, lr=stage.lr, weight_decay=stage.weight_decay, fused=True)
        scheduler = get_scheduler(stage.schedule, optimizer, stage.warmup_steps, stage.steps)
        model, optimizer, scheduler = acc.prepare(self.model, optimizer, scheduler)
        if resume_from is not None:
            acc.load_state(str(resume_from))
        cache = None
        if self.config.feature_cache and encoder_is_frozen(self.model):
            cache = FeatureCache(self.output_dir / "feature-cache", self.model.encoder)
        global_batch = stage.batch_size * self.world * stage.grad_accum
        dataset = self.dataset(stage, index, num_samples=stage.steps * global_batch)
        plan = self.step_batches(dataset, stage)
        bar = tqdm(range(start_step, stage.steps), desc=f"{stage.name}", disable=not acc.is_local_main_process,
                   initial=start_step, total=stage.steps)
        started, seen = time.time(), 0
        steps = StepBatches(self.processor, dataset, plan, stage.loss.distills)
        for step, micro in zip(bar, step_loader(steps, start_step, self.config.num_workers)):
            tokens = acc.reduce(torch.tensor(float(sum(m["tokens"] for m in micro)), device=acc.device), "sum")
            scale = self.world / tokens.clamp_min(1)
            logged = {name: torch.zeros((), device=acc.device) for name in ("cross_entropy",)}
            for k, batch in enumerate(micro):
                batch = {"student": to_device(batch["student"], acc.device), "teacher": to_device(batch["teacher"], acc.device)}
                sync = contextlib.nullcontext() if k == len(micro) - 1 else acc.no_sync(model)
                with sync, acc.autocast():
                    sums = self.losses(model, batch, stage.loss, cache)
                    acc.backward(self.weighted(sums, stage.loss) * scale)
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
                      "loss": sum(getattr(stage.loss, n) * v for n, v in logged.items()), **logged,
                      "samples_per_s": seen / max(time.time() - started, 1e-9)}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            if done % self.config.log_every == 0 or done == stage.steps:
                self.history.append(record)
                acc.log({f"{stage.name}/{k}": v for k, v in record.items() if isinstance(v, (int, float))}, step=index * 10**6 + done)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            if (self.config.eval_every and done % self.config.eval_every == 0) or done == stage.steps:
                result = self.evaluate(model, stage, cache)
                if result:
                    self.history.append({"stage": stage.name, "step": done, **result})
                    acc.log({f"{stage.name}/eval_loss": result["eval_loss"]}, step=index * 10**6 + done)
                    acc.print(f"[{stage.name} step {done}] eval loss {result['eval_loss']:.4f}")
                    for sample in result.get("samples", []):
                        acc.print(f"  reference: {sample['reference']!r}\n  generated: {sample['generated']!r}")
            if (self.config.save_every and done % self.config.save_every == 0) or done == stage.steps:
                self.save_checkpoint(index, done)
        if cache is not None:
            self.history.append({"stage": stage.name, "feature_cache_hits": cache.hits, "feature_cache_misses": cache.misses})
            acc.print(f"feature cache: {cache.hits} hits, {cache.misses} misses")
        self.model = acc.unwrap_model(model)

    def save_final(self) -> Path:
        final = self.output_dir / "final"
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            spec = self.model.config.model_spec
            references = all(p is None or p.name_or_path for p in (spec.encoder, spec.fusion_encoder, spec.llm))
            temporary = self.output_dir / ".tmp-final"
            shutil.rmtree(temporary, ignore_errors=True)
            if self.config.adapter_scale != 1:
                scaled = self.model.scale_adapters(self.config.adapter_scale)
                self.history.append({"adapter_scale": self.config.adapter_scale, "adapters_scaled": scaled})
                self.accelerator.print(f"scaled {scaled} LoRA adapters by {self.config.adapter_scale}")
            if self.config.heads:
                self.fit_heads()
            self.model.save_pretrained(temporary, trainable_only=references)
            (temporary / "history.json").write_text(json.dumps(self.history, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return final


    def fit_heads(self) -> None:
        """Fit the recipe's attribute heads on the labelled manifests of its metadata sources."""
        from ..data.mixing import DataConfig
        from ..heads import fit_model_heads

        manifests = list(dict.fromkeys(
            source.manifest for source in DataConfig.from_dict(self.config.data).sources
            if source.manifest is not None and source.task == "metadata"))
        if not manifests:
            raise ConfigError("heads: the recipe's data needs a metadata source with a manifest to fit them on")
        self.accelerator.print(f"fitting attribute heads {sorted(self.config.heads)} on {', '.join(manifests)}")
        self.model.eval()
        fit_model_heads(self.model, manifests, self.config.heads)


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train a model from a recipe; returns the final model's directory."""
    return Trainer(config).train(resume=resume)
