"""The composite speech LLM: encoder -> connector -> a causal LLM that reads the audio as its coupling says.

`SpeechLLMForConditionalGeneration` is a transformers `PreTrainedModel` registered under model_type
`speechllm`: after `import speechllm`, `AutoModel.from_pretrained(dir)` loads it without trust_remote_code.
This module holds the model itself (parts, embeddings, forward, generate); saving and loading are in
loading.py, what trains in adapters.py, and the prefix / cross-attention differences in coupling.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..audio import SAMPLE_RATE
from ..config import EncoderSpec, from_dict, to_dict
from ..connectors import build_connector
from ..encoders import FusedEncoder, build_encoder
from ..errors import ConfigError, InputError
from ..heads import AttributeHeads
from ..metadata import SPEECHLLM_SCHEMA, MetadataSchema
from .adapters import apply_train_modes, merge_adapters_in_place, scale_adapters
from .configuration import SpeechLLMConfig
from .coupling import build_coupling
from .loading import CheckpointMixin
from .positions import position_limit, room_for_answer
from .processing import IGNORE_INDEX, SpeechLLMProcessor

# LLM config fields that make the output head more than a projection (Gemma, Cohere, Granite).
HEAD_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling")


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


class SpeechLLMForConditionalGeneration(CheckpointMixin, PreTrainedModel):
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
            language_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**spec.llm.hf_config))
        llm_width = language_model.get_input_embeddings().embedding_dim
        self.encoder = encoder
        self.coupling = build_coupling(spec)
        self.connector = build_connector(spec.connector, encoder.output_dim, llm_width, encoder.frame_rate)
        apply_train_modes(self, spec, language_model)
        # Tokenizer, chat template, placeholder: attached by from_spec / from_pretrained, saved beside the weights.
        self.processor: SpeechLLMProcessor | None = None
        self.post_init()

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

    # -- adapters (adapters.py) ------------------------------------------------------------------
    def scale_adapters(self, factor: float) -> int:
        """Multiply every LoRA update by `factor`, in place; returns how many adapters were scaled
        (see adapters.scale_adapters: 0 < factor < 1 interpolates toward the pretrained weights)."""
        return scale_adapters(self, factor)

    def merge_adapters_in_place(self) -> "SpeechLLMForConditionalGeneration":
        """Fold LoRA into the base weights of this model, in place (no copy), and return it; its config then
        says the parts train fully. Same answers, one matmul per layer instead of three."""
        return merge_adapters_in_place(self)

    # -- what the model answers ------------------------------------------------------------------
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

    @property
    def max_positions(self) -> int | None:
        """Positions one row of the LLM holds, prompt (audio positions included) and answer together; None when
        its config names no limit (see positions.py)."""
        return position_limit(self.language_model.config)

    # -- forward -------------------------------------------------------------------------------
    def audio_token_count(self, num_samples: int) -> int:
        """LLM positions taken by a clip of `num_samples` 16 kHz samples (none when read by cross-attention)."""
        return self.coupling.audio_token_count(num_samples)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen parts stay in eval mode: dropout in a frozen encoder is noise, not regularisation.
        for module in [self.encoder, self.connector, self.language_model]:
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def encode_audio(self, audio_values: torch.Tensor,
                     audio_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (clips, samples) -> connector outputs (clips, tokens, llm_width) and token counts."""
        encoder_trains = any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trains):
            features, lengths = self.encoder(audio_values, audio_lengths)
        return self.connector(features.to(self.connector_dtype(features.dtype)), lengths)

    @torch.no_grad()
    def encode_audio_layers(self, audio_values: torch.Tensor, audio_lengths: torch.Tensor, all_layers: bool = True):
        """One encoder pass over padded clips for the attribute heads and the LLM alike -> (encoder states and each
        clip's own frame count, on the CPU, for the heads to pool; the last layer's frames and lengths, which
        `generate(audio_features=...)` reads). States are (clips, frames, layers, dim) with `all_layers`."""
        # Waveforms as they come (fp32): each encoder casts to its own dtype, which may not be the LLM's (precision.py).
        states, frames = self.encoder(audio_values.to(self.device), audio_lengths.to(self.device),
                                      all_layers=all_layers)
        last = states[:, :, -1] if all_layers else states
        # The clip's own frames: an encoder that keeps Whisper's whole 30 s window (crop_to_length: false) also
        # returns the frames of the padding, which would dilute pooled statistics by the clip's length.
        own = torch.ceil(audio_lengths.to(frames.device).double() * self.encoder.frame_rate / SAMPLE_RATE).long()
        return (states.float().cpu(), torch.minimum(own, frames).cpu()), (last, frames)

    def connector_dtype(self, default: torch.dtype) -> torch.dtype:
        return next((p.dtype for p in self.connector.parameters()), default)

    @property
    def llm_dtype(self) -> torch.dtype:
        """The dtype the LLM reads its inputs in (its embeddings'): audio entering it is cast to this."""
        return self.get_input_embeddings().weight.dtype

    def embed(
        self, input_ids, audio_values=None, audio_lengths=None, audio_embeds=None, audio_features=None
    ) -> torch.Tensor:
        """Token embeddings with each clip's connector outputs written into its placeholder positions (see
        `embed_audio`, which also says which positions a clip left unused)."""
        return self.embed_audio(input_ids, audio_values, audio_lengths, audio_embeds, audio_features)[0]

    def embed_audio(
        self, input_ids, audio_values=None, audio_lengths=None, audio_embeds=None, audio_features=None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(token embeddings with each clip's connector outputs in its placeholder positions, the positions a clip
        left unused or None).

        Instead of waveforms, `audio_features` (encoder outputs and frame counts, e.g. from the feature
        cache) skips the encoder, and `audio_embeds` (one (tokens, width) tensor per clip) skips the
        encoder and the connector. A clip whose placeholders are a budget (an encoder that transcribes gives as
        many tokens as it heard, at most the budget) fills the first ones; the rest are unused, and the caller
        masks them out of attention, so the LLM reads exactly what it would read without them.
        """
        audio_id = self.processor.audio_token_id if self.processor else None
        is_audio = input_ids == audio_id
        embeds = self.get_input_embeddings()(input_ids.masked_fill(is_audio, 0))
        if audio_embeds is None and (audio_values is not None or audio_features is not None):
            bind = getattr(self.connector, "bind", None)
            if bind is not None and not self.connector.bound:  # e.g. token_bridge's table of LLM embeddings
                bind(self.encoder, self.language_model, self.processor.tokenizer)
            if audio_features is None:
                outputs, lengths = self.encode_audio(audio_values.to(embeds.device), audio_lengths.to(embeds.device))
            else:
                features, frames = audio_features
                dtype = self.connector_dtype(embeds.dtype)
                outputs, lengths = self.connector(features.to(embeds.device, dtype), frames.to(embeds.device))
            audio_embeds = [o[:n] for o, n in zip(outputs, lengths.tolist())]
        expected = int(is_audio.sum())
        given = sum(len(a) for a in audio_embeds) if audio_embeds is not None else 0
        budget = getattr(getattr(self.encoder, "frames", None), "is_budget", False)
        if not (budget and expected) and expected == given:
            if expected:
                flat = torch.cat(list(audio_embeds)).to(embeds.dtype)
                embeds = embeds.masked_scatter(is_audio[..., None], flat)
            return embeds, None
        spans = placeholder_spans(is_audio)
        if not budget or audio_embeds is None or len(spans) != len(audio_embeds):
            raise InputError(f"the prompt has {expected} audio positions but the audio gives {given} embeddings")
        # A budget is a ceiling: a transcript longer than its clip's budget is cut there, as the budget says.
        audio_embeds = [clip[:length] for clip, (_, _, length) in zip(audio_embeds, spans)]
        unused = torch.zeros_like(is_audio)
        pieces = []
        for clip, (row, start, length) in zip(audio_embeds, spans):
            pieces += [clip.to(embeds.dtype), clip.new_zeros(length - len(clip), embeds.shape[-1]).to(embeds.dtype)]
            unused[row, start + len(clip): start + length] = True
        embeds = embeds.masked_scatter(is_audio[..., None], torch.cat(pieces))
        return embeds, unused

    def forward(
        self, input_ids, attention_mask=None, audio_values=None, audio_lengths=None, labels=None,
        audio_embeds=None, audio_features=None, logits_mask=None, **kwargs,
    ):
        """LLM outputs; with `labels`, `loss` is the mean next-token cross-entropy over answer tokens.

        With `logits_mask` ((batch, seq) booleans), `logits` are computed at the True positions only and
        come flattened row by row, (positions, vocab): training needs them at answer positions alone.
        """
        inputs, padding = self.coupling.llm_inputs(self, input_ids, attention_mask, audio_values, audio_lengths,
                                                   audio_embeds, audio_features)
        if logits_mask is not None:
            if labels is not None:
                raise InputError("pass `labels` or `logits_mask`, not both: the loss needs logits at every position")
            with padding:
                return logits_at(self.language_model, logits_mask, **inputs, **kwargs)
        with padding:
            out = self.language_model(**inputs, **kwargs)
        if labels is not None:
            # Computed here, not by the LLM: LLMs disagree on whether they shift labels (Whisper does not).
            out.loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                       ignore_index=IGNORE_INDEX)
        return out

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, audio_values=None, audio_lengths=None, audio_features=None,
                 **kwargs):
        """Batched generation (greedy, sampling, beams: any `generate` option) with KV cache.

        Returns only the new tokens, shape (batch, new_tokens). `audio_features` (encoder outputs and frame
        counts, already computed for these clips) skips the encoder. `max_new_tokens` is cut to the positions the
        padded prompt leaves in the LLM; a prompt that alone fills them is an InputError (not an IndexError later).
        """
        room = room_for_answer(self.max_positions, input_ids.shape[1])
        if room is not None and kwargs.get("max_new_tokens") is not None:
            kwargs["max_new_tokens"] = min(kwargs["max_new_tokens"], room)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs.setdefault("pad_token_id", self.processor.tokenizer.pad_token_id)
        kwargs.setdefault("eos_token_id", self.processor.end_of_turn_ids)
        if kwargs.get("max_new_tokens") is not None:
            # max_new_tokens decides; a max_length from the LLM's generation config (Whisper: 448) only adds a warning
            kwargs.setdefault("max_length", None)
        return self.coupling.generate(self, input_ids, attention_mask, audio_values, audio_lengths, audio_features,
                                      **kwargs)

    # -- asking about audio (see inference.py) ---------------------------------------------------
    def chat(self, conversations, **kwargs) -> list[str]:
        """Answers to conversations with text and audio parts (batched, greedy by default)."""
        from ..inference import chat

        return chat(self, conversations, **kwargs)

    def transcribe(self, audio, **kwargs):
        """Transcript of a clip, or a list of transcripts for a list of clips."""
        from ..inference import transcribe

        return transcribe(self, audio, **kwargs)

    def ask(self, audio, question: str, **kwargs):
        """The answer to a question about a clip (or each of a list), worded as the model was trained."""
        from ..inference import ask

        return ask(self, audio, question, **kwargs)

    def summarize(self, audio, **kwargs):
        """A summary of a clip (or each of a list), worded as the model was trained."""
        from ..inference import summarize

        return summarize(self, audio, **kwargs)

    def generate_meta(self, audio, fields=None, instruction=None, **kwargs):
        """Schema-valid speaker metadata with per-label confidences (see inference.generate_meta)."""
        from ..inference import generate_meta

        return generate_meta(self, audio, fields, instruction, **kwargs)


def placeholder_spans(is_audio: torch.Tensor) -> list[tuple[int, int, int]]:
    """(row, start, length) of each run of audio placeholders, in reading order: one run a clip, when text
    separates the clips of a prompt (the processor writes each clip's placeholders together)."""
    spans = []
    for row, flags in enumerate(is_audio.tolist()):
        start = None
        for position, flag in enumerate(flags + [False]):
            if flag and start is None:
                start = position
            elif not flag and start is not None:
                spans.append((row, start, position - start))
                start = None
    return spans


def _random_init(spec: EncoderSpec) -> EncoderSpec:
    """The same encoder spec, built from its recorded config instead of downloading weights."""
    if spec.hf_config is None:
        return spec
    return from_dict(EncoderSpec, {**to_dict(spec), "name_or_path": None})


AutoModel.register(SpeechLLMConfig, SpeechLLMForConditionalGeneration)
