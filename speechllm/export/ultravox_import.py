"""Read an Ultravox folder written by `export_ultravox` back into a speechllm model (the round trip's other half).

Checkpoints that refer to their encoder or LLM by hub id (`audio_model_id` / `text_model_id`, as fixie-ai's own
releases do) or that use a transformer projector are refused with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file
from transformers import AutoTokenizer

from ..config import ModelSpec, from_dict
from ..errors import ConfigError
from .ultravox import WEIGHTS

BACK = {"audio_tower.": "encoder.model.", "multi_modal_projector.": "connector.", "language_model.": "language_model."}


def ultravox_spec(config: dict, chat_template: str | None) -> ModelSpec:
    """The speechllm spec of an Ultravox config.json (Whisper on each clip's frames, `ultravox` connector)."""
    if config.get("model_type") != "ultravox":
        raise ConfigError(f"not an Ultravox config (model_type {config.get('model_type')!r})")
    for key in ("audio_model_id", "text_model_id"):
        if config.get(key):
            raise ConfigError(f"this Ultravox checkpoint refers to {key}={config[key]!r} instead of holding the "
                              "weights; only self-contained folders (as `speechllm export` writes) are read")
    if config.get("num_projector_layers", 0) or config.get("projector_act", "swiglu") != "swiglu":
        raise ConfigError("only Ultravox's SwiGLU feed-forward projector has a speechllm connector")
    extra = config.get("speechllm_spec", {})
    return from_dict(ModelSpec, {
        "encoder": {"family": "whisper", "hf_config": config["audio_config"], "options": {"pad_to_window": False}},
        "connector": {"type": "ultravox", "options": {
            "stack": config.get("stack_factor", 8), "hidden_dim": config["hidden_size"],
            "ln_mid": bool(config.get("projector_ln_mid", False))}},
        "llm": {"hf_config": config["text_config"], "chat_template": chat_template},
        **extra,
    }, "ultravox")


def load_ultravox(folder):
    """A SpeechLLMForConditionalGeneration from an Ultravox folder (config.json, model.safetensors, tokenizer)."""
    from ..models import SpeechLLMForConditionalGeneration

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder}: no config.json; pass a folder written by `speechllm export`")
    config = json.loads((folder / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    spec = ultravox_spec(config, getattr(tokenizer, "chat_template", None))
    model = SpeechLLMForConditionalGeneration.from_spec(spec, tokenizer=tokenizer)
    state = {}
    for name, tensor in load_file(str(folder / WEIGHTS)).items():
        prefix = next((p for p in BACK if name.startswith(p)), None)
        if prefix is None:
            raise ConfigError(f"{folder}: weight {name!r} is not Ultravox's (audio_tower, projector or LLM)")
        state[BACK[prefix] + name[len(prefix):]] = tensor
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"language_model.lm_head.weight"} if model.language_model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ConfigError(f"{folder}: weights do not fit the model its config describes (missing "
                          f"{sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.tie_weights()
    return model.eval()
