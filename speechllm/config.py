"""Typed configuration of a speech LLM: which encoder, which connector, which LLM, and what trains.

The dataclasses here are what users write in YAML (`model:` section of a recipe) and what
`SpeechLLMConfig` stores inside a saved checkpoint. Unknown keys are an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError

TrainMode = Literal["frozen", "full", "lora"]


@dataclass
class LoraSpec:
    """LoRA settings handed to peft."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # "all-linear" is peft's shorthand for every linear layer but the output head.
    target_modules: list[str] | str = "all-linear"


@dataclass
class EncoderSpec:
    """An audio encoder: a family from `encoders.ENCODERS` and its weights.

    `name_or_path` is a hub id or a local directory; `hf_config` builds random weights from a config dict
    instead (tests, and checkpoints that carry their own weights). `window_seconds` caps one encoder call:
    longer audio is cut into windows whose features are joined.
    """

    family: str = "whisper"
    name_or_path: str | None = None
    hf_config: dict | None = None
    train: TrainMode = "frozen"
    lora: LoraSpec = field(default_factory=LoraSpec)
    window_seconds: float | None = None
    normalize: bool | None = None  # per-utterance waveform normalisation (SSL encoders); None: from the model
    # Whisper only: False keeps all 1500 frames of each 30 s window, as Whisper's own decoder expects.
    crop_to_length: bool = True
    options: dict = field(default_factory=dict)  # family-specific settings (whisper_transcriber's token budget)


@dataclass
class ConnectorSpec:
    """A connector from `connectors.CONNECTORS` and its keyword arguments."""

    type: str = "stack_mlp"
    options: dict = field(default_factory=dict)
    train: TrainMode = "full"


@dataclass
class LLMSpec:
    """A causal LM by hub id or local path, or from `hf_config` with random weights."""

    name_or_path: str | None = None
    hf_config: dict | None = None
    train: TrainMode = "frozen"
    lora: LoraSpec = field(default_factory=LoraSpec)
    # Used when the tokenizer has no chat template of its own (see models.processing.FALLBACK_CHAT_TEMPLATE).
    chat_template: str | None = None
    # "prefix": audio embeddings fill placeholder positions of the prompt (decoder-only LLMs).
    # "cross_attention": the LLM reads audio through cross-attention (Whisper's decoder); one clip per prompt.
    coupling: Literal["prefix", "cross_attention"] = "prefix"
    # Inference on a CPU with native bf16 (models/precision.py): "auto" runs the LLM in bf16, "fp32" keeps it in fp32
    # where bf16 measurably changes the model's answers or batching (the packaged models: README, Precision).
    cpu_precision: Literal["auto", "fp32"] = "auto"


@dataclass
class ModelSpec:
    """The whole model: encoder (optionally fused with a second one), connector and LLM."""

    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    fusion_encoder: EncoderSpec | None = None
    connector: ConnectorSpec = field(default_factory=ConnectorSpec)
    llm: LLMSpec = field(default_factory=LLMSpec)
    audio_token: str = "<|audio|>"
    max_audio_seconds: float = 600.0
    metadata_schema: dict | None = None  # None: metadata.SPEECHLLM_SCHEMA
    # How requests are worded (speechllm.prompt_styles): "few-shot" for a base LLM, in training and evaluation alike.
    prompt_style: str | None = None


def from_dict(cls: type, data: Any, where: str = ""):
    """Build dataclass `cls` from a plain dict, recursively, failing on unknown keys and wrong shapes."""
    if isinstance(data, cls):
        return data
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(names)}"
        )
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _coerce(hint, value, where):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if dataclasses.is_dataclass(arg):
                return from_dict(arg, value, where)
        return value
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [from_dict(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is Literal and value not in args:
        raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # PyYAML reads `lr: 1e-4` (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    if hint is int and isinstance(value, float) and value.is_integer():  # `alpha: 16.0` in an older checkpoint
        return int(value)
    expected = _SCALARS.get(hint)
    if expected and (not isinstance(value, hint) or (hint is not bool and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")
    return value


# A YAML typo (`steps: 1O`, `seed: abc`) fails when read, naming the key, not deep inside training.
_SCALARS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def to_dict(spec) -> dict:
    """A dataclass spec as a JSON-serialisable dict."""
    return dataclasses.asdict(spec)
