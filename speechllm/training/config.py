"""The training recipe: model, data, stages. Loaded from YAML; unknown keys are an error."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ..config import ModelSpec, from_dict
from ..errors import ConfigError
from .losses import LossConfig


@dataclass
class StageConfig:
    """One training stage: what trains, for how long, with which optimiser settings and losses.

    `trains` names parts of the model: "encoder", "connector", "llm". A part built with LoRA adapters
    trains its adapters only; other parts train every weight.
    """

    name: str = "stage"
    trains: list[str] = field(default_factory=lambda: ["connector"])
    steps: int = 100
    batch_size: int = 8  # per process and micro-step
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = 1.0
    loss: LossConfig = field(default_factory=LossConfig)
    data: dict | None = None  # a `data:` section for this stage only; None: the recipe's


@dataclass
class TrainConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: dict = field(default_factory=dict)  # see speechllm.data.mixing.DataConfig
    eval_data: dict | None = None
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    # Tokenizer for an LLM built from `hf_config`: a hub id, or a folder holding a tokenizer saved with save_pretrained.
    tokenizer: str | None = None
    output_dir: str = "runs/speechllm"
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    feature_cache: bool = True  # cache frozen-encoder outputs on disk (output_dir/feature-cache)
    save_every: int = 100
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0: at the end of each stage only
    eval_batches: int = 4  # batches of the largest stage batch size: one eval set, built once, scores every stage
    eval_samples: int = 2  # generated answers shown at each evaluation
    log_every: int = 10
    # "ddp": every process holds the whole model (or what an accelerate config file says, e.g. DeepSpeed ZeRO);
    # "fsdp": each process holds a shard of the weights, gradients and optimiser states (training/sharding.py).
    distributed: Literal["ddp", "fsdp"] = "ddp"
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    num_workers: int = 0  # processes that read and collate upcoming steps' audio while the model trains
    # Attribute heads fitted after the last stage, on the data's metadata manifests: {field: [features]}, features
    # from speechllm.heads.FEATURES (pitch, formants, vad, voice, encoder, encoder_layers). They decide those fields;
    # see heads.py.
    heads: dict[str, list[str]] = field(default_factory=dict)
    # After the last stage, every LoRA update is multiplied by this (0 < scale <= 1): weight-space interpolation
    # toward the pretrained model (WiSE-FT), which trades fit to the training data for robustness elsewhere.
    adapter_scale: float = 1.0


# The lowest value of each stage number that training can use; anything lower fails deep inside torch or numpy.
# (max_grad_norm 0 turns clipping off.)
_STAGE_MINIMUMS = {"steps": 1, "batch_size": 1, "grad_accum": 1, "lr": 0, "weight_decay": 0, "warmup_steps": 0,
                   "max_grad_norm": 0}


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ["stages.0.steps=5", "seed=3"] to a recipe dict; values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "the recipe"
            if isinstance(node, list):
                if not (part.isdecimal() and int(part) < len(node)):
                    raise ConfigError(f"override {key}: {where} is a list of {len(node)} item(s), so {part!r} is "
                                      f"not an index into it" + (f" (use 0 to {len(node) - 1})" if node else ""))
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"override {key}: {where} is a value ({node!r}), not a section with keys")
            if depth == len(parts) - 1:
                node[part] = yaml.safe_load(value)
            else:
                node = node[part] if isinstance(node, list) else node.setdefault(part, {})
    return data


def load_train_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML recipe, apply `key=value` overrides, and check every key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"recipe {path} not found")
    if path.is_dir():
        raise ConfigError(f"recipe {path} is a folder; pass the recipe's YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    data = apply_overrides(data, list(overrides))
    config = from_dict(TrainConfig, data, "recipe")
    for i, stage in enumerate(config.stages):
        unknown = set(stage.trains) - {"encoder", "connector", "llm"}
        if unknown:
            raise ConfigError(f"stages[{i}].trains: unknown part(s) {sorted(unknown)}; use encoder, connector, llm")
        for key, lowest in _STAGE_MINIMUMS.items():
            value = getattr(stage, key)
            if not (lowest <= value < math.inf):  # also catches nan
                raise ConfigError(f"stages[{i}].{key} must be {lowest} or more, got {value!r}")
    if config.log_every < 1:
        raise ConfigError(f"log_every must be 1 or more (steps between log lines), got {config.log_every}")
    if config.num_workers < 0:
        raise ConfigError(f"num_workers must be 0 (read data in the training process) or more, "
                          f"got {config.num_workers}")
    if not 0 < config.adapter_scale <= 1:
        raise ConfigError(f"adapter_scale must be in (0, 1] (1 keeps the trained adapters), got {config.adapter_scale}")
    parts = [config.model.encoder, config.model.fusion_encoder, config.model.connector, config.model.llm]
    if config.adapter_scale != 1 and not any(part is not None and part.train == "lora" for part in parts):
        raise ConfigError("adapter_scale scales LoRA adapters, and no part of this model trains with LoRA "
                          "(set model.llm.train: lora, or drop adapter_scale)")
    if config.distributed == "fsdp" and any(stage.loss.distills for stage in config.stages):
        raise ConfigError("distillation runs the LLM outside the model's forward, which a sharded (fsdp) model "
                          "cannot do; use distributed: ddp for recipes with distill_logits or distill_hidden")
    from ..heads import check_head_features

    for name, features in config.heads.items():
        check_head_features(name, features, f"heads.{name}")
    return config
