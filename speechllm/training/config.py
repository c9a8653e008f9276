"""The training recipe: model, data, stages. Loaded from YAML; unknown keys are an error."""

from __future__ import annotations

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
    # Tokenizer for an LLM built from `hf_config`; "tiny" is speechllm.testing's tiny tokenizer.
    tokenizer: str | None = None
    output_dir: str = "runs/speechllm"
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    feature_cache: bool = True  # cache frozen-encoder outputs on disk (output_dir/feature-cache)
    save_every: int = 100
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0: at the end of each stage only
    eval_batches: int = 4
    eval_samples: int = 2  # generated answers shown at each evaluation
    log_every: int = 10
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    num_workers: int = 0  # processes that read and collate upcoming steps' audio while the model trains
    # Attribute heads fitted after the last stage, on the data's metadata manifests: {field: [features]}, features
    # from speechllm.heads.FEATURES (pitch, formants, vad, voice, encoder, encoder_layers). They decide those fields;
    # see heads.py.
    heads: dict[str, list[str]] = field(default_factory=dict)
    # After the last stage, every LoRA update is multiplied by this (0 < scale <= 1): weight-space interpolation
    # toward the pretrained model (WiSE-FT), which trades fit to the training data for robustness elsewhere.
    adapter_scale: float = 1.0


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ["stages.0.steps=5", "seed=3"] to a recipe dict; values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = yaml.safe_load(value)
        else:
            node[last] = yaml.safe_load(value)
    return data


def load_train_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML recipe, apply `key=value` overrides, and check every key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"recipe {path} not found")
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
    if config.num_workers < 0:
        raise ConfigError(f"num_workers must be 0 (read data in the training process) or more, got {config.num_workers}")
    if not 0 < config.adapter_scale <= 1:
        raise ConfigError(f"adapter_scale must be in (0, 1] (1 keeps the trained adapters), got {config.adapter_scale}")
    from ..heads import check_head_features

    for name, features in config.heads.items():
        check_head_features(name, features, f"heads.{name}")
    return config
