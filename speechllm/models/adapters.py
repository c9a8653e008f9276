"""What trains: freezing, full training or LoRA per part, and folding or scaling LoRA adapters afterwards."""

from __future__ import annotations

import torch
from torch import nn

from ..config import LoraSpec, ModelSpec
from ..encoders import FusedEncoder
from ..errors import ConfigError


def apply_train_mode(module: nn.Module, mode: str, lora: LoraSpec) -> nn.Module:
    """Freeze, fully train, or wrap `module` with LoRA adapters (peft). Returns the module to use."""
    if mode == "frozen":
        return module.requires_grad_(False)
    if mode == "full":
        return module.requires_grad_(True)
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        module.requires_grad_(False)
        config = LoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules
        )
        return get_peft_model(module, config)
    raise ConfigError(f"train mode must be frozen, full or lora, got {mode!r}")


def encoder_parts(encoder: nn.Module, spec: ModelSpec) -> list[tuple[nn.Module, object]]:
    """(encoder, its spec) for the encoder and, when fused, its second encoder."""
    if isinstance(encoder, FusedEncoder):
        return [(encoder.primary, spec.encoder), (encoder.secondary, spec.fusion_encoder)]
    return [(encoder, spec.encoder)]


def apply_train_modes(model: nn.Module, spec: ModelSpec, language_model: nn.Module) -> None:
    """Set what trains in each part of `model` (encoders, connector) and attach `language_model` to it."""
    for encoder, part_spec in encoder_parts(model.encoder, spec):
        encoder.model = apply_train_mode(encoder.model, part_spec.train, part_spec.lora)
    model.connector = apply_train_mode(model.connector, spec.connector.train, LoraSpec())
    model.language_model = apply_train_mode(language_model, spec.llm.train, spec.llm.lora)


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the base weights (no-op without adapters)."""
    return module.merge_and_unload() if hasattr(module, "merge_and_unload") else module


def merge_adapters_in_place(model: nn.Module) -> nn.Module:
    """Fold `model`'s LoRA adapters into its base weights, in place; its config then says those parts train fully."""
    spec = model.config.model_spec
    for encoder, part_spec in encoder_parts(model.encoder, spec):
        encoder.model = merge_lora(encoder.model)
        if part_spec.train == "lora":
            part_spec.train = "full"
    model.language_model = merge_lora(model.language_model)
    if spec.llm.train == "lora":
        spec.llm.train = "full"
    return model


def scale_adapters(model: nn.Module, factor: float) -> int:
    """Multiply every LoRA update (B @ A) of `model` by `factor`, in place; returns how many adapters were scaled.

    With 0 < factor < 1 this interpolates in weight space between the pretrained and the fine-tuned model
    (WiSE-FT, Wortsman et al. 2022): the fine-tuned model keeps more of the pretrained one's robustness on data
    unlike what it was tuned on (for the default model: real speech after training on synthetic voices)."""
    if not factor > 0:
        raise ConfigError(f"adapter scale must be positive, got {factor}")
    scaled = 0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_B." in name:  # the update is B @ A, linear in B
                parameter.mul_(factor)
                scaled += 1
    return scaled
