"""Turn conversations with audio into model inputs: the same code for training and for inference.

A conversation is a list of messages in the Hugging Face chat format. A message's `content` is a
string, or a list of parts `{"type": "text", "text": ...}` and `{"type": "audio", "audio": <waveform>}`
in any number and order. A waveform is a 1-D float 16 kHz numpy array or tensor (or an `(array, 16000)`
pair); files and other sources are decoded before, by `speechllm.audio.load_conversation_audio` with the
processor's `audio_limits`. Each audio part becomes one placeholder token in the rendered chat template,
then expands to exactly as many positions as the encoder and connector produce for that clip: a count
the processor takes from the model's spec (`coupling.audio_token_count`), so it needs no model, saves
itself (`save_pretrained`) and loads with `transformers.AutoProcessor.from_pretrained`.

Why the prompt is byte-identical in training and inference: the rendered conversation is cut at every
assistant turn and each piece is tokenised on its own, so the tokens before an answer never depend on
the answer; `add_generation_prompt=True` produces exactly the tokens that precede the answer in
training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from transformers import AutoProcessor, AutoTokenizer
from transformers.utils import cached_file

from ..audio import SAMPLE_RATE, pad_batch
from ..config import LLMSpec, ModelSpec, from_dict, to_dict
from ..errors import ConfigError, InputError
from .configuration import SpeechLLMConfig
from .coupling import build_coupling

IGNORE_INDEX = -100
PROCESSOR_CONFIG = "processor_config.json"
HUB_OPTIONS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")

# For tokenizers without a chat template (base LMs, Whisper's decoder): plain role headers, and the
# tokenizer's EOS closes each assistant turn so generation knows where to stop.
FALLBACK_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% else %}### Assistant:\n{{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)

Message = dict[str, Any]
Conversation = list[Message]


@dataclass
class EncodedConversation:
    input_ids: list[int]
    labels: list[int]
    audio: list  # waveforms (float32 16 kHz numpy arrays), in order of appearance


def processor_spec(spec: ModelSpec) -> ModelSpec:
    """The parts of a model's spec the processor needs: audio placeholder, chat template, audio limits, and
    the encoder, connector and coupling that decide token counts (not the LLM's weights or config)."""
    return from_dict(ModelSpec, {
        **to_dict(spec), "metadata_schema": None,
        "llm": to_dict(LLMSpec(chat_template=spec.llm.chat_template, coupling=spec.llm.coupling)),
    })


class SpeechLLMProcessor:
    """Owns the tokenizer, the chat template and the audio placeholder; counts audio tokens from `spec`.

    Stands alone: built from a tokenizer and a `ModelSpec` (a dict works too), saved with `save_pretrained`,
    loaded with `from_pretrained` or `transformers.AutoProcessor.from_pretrained`, and picklable.
    """

    def __init__(self, tokenizer, spec: ModelSpec | dict):
        self.tokenizer = tokenizer
        self.spec = processor_spec(from_dict(ModelSpec, spec, "model"))
        self.coupling = build_coupling(self.spec)
        audio_token = self.audio_token = self.spec.audio_token
        chat_template = self.spec.llm.chat_template
        self.max_audio_seconds = self.spec.max_audio_seconds
        if audio_token not in tokenizer.get_vocab():
            # Added beside the tokenizer's other extra special tokens (an end-of-turn token may be one of them).
            tokenizer.add_special_tokens({"additional_special_tokens": [audio_token]},
                                         replace_extra_special_tokens=False)
        self.audio_token_id = tokenizer.convert_tokens_to_ids(audio_token)
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        elif not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        if tokenizer.pad_token_id is None:
            # Padding positions are masked out; any id will do, EOS is the usual choice.
            tokenizer.pad_token = tokenizer.eos_token
        self.end_of_turn_ids = self._find_end_of_turn_ids()

    @property
    def min_samples(self) -> int:
        """The shortest clip the encoder turns into at least one frame (shorter ones are padded when loaded)."""
        return self.coupling.min_samples

    @property
    def audio_limits(self) -> dict:
        """What `load_audio` / `load_conversation_audio` take to load clips for this model."""
        return {"min_samples": self.min_samples, "max_seconds": self.max_audio_seconds}

    def audio_token_count(self, num_samples: int) -> int:
        """Prompt positions one clip of `num_samples` 16 kHz samples takes (0 when read by cross-attention)."""
        return self.coupling.audio_token_count(num_samples)

    # -- saving --------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Write the tokenizer and `processor_config.json` (the spec parts the processor needs)."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(save_directory)
        config = {"processor_class": type(self).__name__, "spec": to_dict(self.spec)}
        (save_directory / PROCESSOR_CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "SpeechLLMProcessor":
        """A processor saved by `save_pretrained` (a local folder or hub id), or, for a model folder saved
        without one, rebuilt from the model's config.json."""
        path = str(pretrained_model_name_or_path)
        hub = {k: v for k, v in kwargs.items() if k in HUB_OPTIONS}
        config_file = cached_file(path, PROCESSOR_CONFIG, _raise_exceptions_for_missing_entries=False, **hub)
        if config_file is not None:
            spec = json.loads(Path(config_file).read_text())["spec"]
        else:
            spec = SpeechLLMConfig.from_pretrained(path, trust_remote_code=False, **hub).model_spec
        return cls(AutoTokenizer.from_pretrained(path, trust_remote_code=False, **hub), spec)

    def _find_end_of_turn_ids(self) -> list[int]:
        """The special tokens that close an assistant turn in this template (plus EOS): generation stops there."""
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
        answer = next(text for text, is_answer in self.segments(probe, False) if is_answer)
        special = set(self.tokenizer.all_special_ids) - {self.audio_token_id}
        ids = [t for t in self.tokenizer(answer, add_special_tokens=False).input_ids if t in special]
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    # -- rendering -----------------------------------------------------------------------------
    def _flatten(self, conversation: Conversation) -> tuple[list[dict], list]:
        """Messages with string content (audio parts -> placeholder) and the audio sources in order."""
        if not isinstance(conversation, (list, tuple)) or not all(isinstance(m, dict) for m in conversation):
            raise InputError("a conversation must be a list of messages like {'role': 'user', 'content': ...}")
        messages, audio = [], []
        for index, message in enumerate(conversation):
            if "role" not in message or "content" not in message:
                raise InputError(f"message {index} needs 'role' and 'content' keys, got {sorted(message)}")
            content = message["content"]
            if isinstance(content, str):
                messages.append({"role": message["role"], "content": content})
                continue
            if not isinstance(content, (list, tuple)):
                raise InputError(f"message {index}: content must be a string or a list of parts")
            text = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise InputError(f"message {index}: a text part needs 'text' (a string), got {part!r}")
                    text.append(part["text"])
                elif kind == "audio":
                    if message["role"] == "assistant":
                        raise InputError(f"message {index}: the assistant cannot speak audio parts")
                    text.append(self.audio_token)
                    audio.append(part.get("audio"))
                else:
                    raise InputError(f"message {index}: unknown content part {part!r}; use type 'text' or 'audio'")
            messages.append({"role": message["role"], "content": "".join(text)})
        return messages, audio

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def segments(self, messages: list[dict], add_generation_prompt: bool) -> list[tuple[str, bool]]:
        """The rendered conversation cut at each assistant turn: (text, is_answer) pieces."""
        pieces, done = [], ""
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self.render(messages[:index], add_generation_prompt=True)
            through = self.render(messages[: index + 1], add_generation_prompt=False)
            if not before.startswith(done) or not through.startswith(before):
                raise ConfigError(
                    "the chat template renders earlier turns differently once later turns are added; "
                    "speechllm needs a prefix-stable template (set llm.chat_template)"
                )
            pieces += [(before[len(done) :], False), (through[len(before) :], True)]
            done = through
        final = self.render(messages, add_generation_prompt=add_generation_prompt)
        if not final.startswith(done):
            raise ConfigError("the chat template is not prefix-stable (set llm.chat_template)")
        pieces.append((final[len(done) :], False))
        return [(text, is_answer) for text, is_answer in pieces if text]

    # -- encoding ------------------------------------------------------------------------------
    def _answer_labels(self, ids: list[int]) -> list[int]:
        """Train the answer and its end-of-turn token, not the template text after it."""
        special = set(self.tokenizer.all_special_ids) - {self.audio_token_id}
        last = max((i for i, t in enumerate(ids) if t in special), default=len(ids) - 1)
        return ids[: last + 1] + [IGNORE_INDEX] * (len(ids) - last - 1)

    def encode(self, conversation: Conversation, add_generation_prompt: bool = True) -> EncodedConversation:
        """Token ids (placeholders expanded), labels (answers only) and waveforms of one conversation."""
        messages, sources = self._flatten(conversation)
        audio = [waveform(source, clip) for clip, source in enumerate(sources)]
        input_ids, labels = [], []
        for text, is_answer in self.segments(messages, add_generation_prompt):
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            input_ids += ids
            labels += self._answer_labels(ids) if is_answer else [IGNORE_INDEX] * len(ids)
        if input_ids.count(self.audio_token_id) != len(audio):
            raise InputError(
                f"the text contains the audio placeholder {self.audio_token!r} itself; remove it from the text parts"
            )
        expanded_ids, expanded_labels, clip = [], [], 0
        for token, label in zip(input_ids, labels):
            if token == self.audio_token_id:
                count = self.audio_token_count(len(audio[clip]))
                expanded_ids += [token] * count
                expanded_labels += [IGNORE_INDEX] * count
                clip += 1
            else:
                expanded_ids.append(token)
                expanded_labels.append(label)
        return EncodedConversation(expanded_ids, expanded_labels, audio)

    def collate(self, encoded: Sequence[EncodedConversation], padding_side: str) -> dict[str, torch.Tensor]:
        """Pad a batch: left for generation, right for training. Audio of all rows is flattened in order."""
        width = max(len(e.input_ids) for e in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            n = len(e.input_ids)
            span = slice(width - n, width) if padding_side == "left" else slice(0, n)
            input_ids[row, span] = torch.tensor(e.input_ids)
            labels[row, span] = torch.tensor(e.labels)
            attention_mask[row, span] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        clips = [clip for e in encoded for clip in e.audio]
        if clips:
            batch["audio_values"], batch["audio_lengths"] = pad_batch(clips)
        return batch

    def __call__(
        self,
        conversations: Conversation | Sequence[Conversation],
        *,
        add_generation_prompt: bool = True,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode one conversation or a batch.

        For inference (`add_generation_prompt=True`, the default) rows are left-padded and the prompt ends
        where the answer begins. For training, pass conversations that end with the assistant's answer and
        `add_generation_prompt=False`; rows are right-padded and `labels` mark only the answers.
        """
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]
        if not conversations:
            raise InputError("no conversation given")
        encoded = [self.encode(c, add_generation_prompt) for c in conversations]
        side = padding_side or ("left" if add_generation_prompt else "right")
        batch = self.collate(encoded, side)
        if add_generation_prompt:
            batch.pop("labels")
        return batch

    def decode(self, token_ids, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(token_ids, skip_special_tokens=skip_special_tokens)


def waveform(source, clip: int) -> np.ndarray:
    """An audio part's waveform as a float32 array; InputError for anything else (files are loaded before)."""
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], (np.ndarray, torch.Tensor)):
        if source[1] != SAMPLE_RATE:
            raise InputError(f"audio clip {clip} is at {source[1]} Hz; the processor takes {SAMPLE_RATE} Hz "
                             "waveforms: resample it with speechllm.audio.load_audio")
        source = source[0]
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().float().numpy()
    if not isinstance(source, np.ndarray):
        raise InputError(f"audio clip {clip} is a {type(source).__name__}; the processor takes 16 kHz waveforms: "
                         "load files first with speechllm.audio.load_conversation_audio(conversations, "
                         "**processor.audio_limits)")
    if source.ndim != 1 or not np.issubdtype(source.dtype, np.floating) or not source.size:
        raise InputError(f"audio clip {clip} has shape {source.shape} and dtype {source.dtype}; the processor takes "
                         "non-empty 1-D float waveforms (speechllm.audio.load_audio makes them)")
    return source.astype(np.float32, copy=False)


AutoProcessor.register(SpeechLLMConfig, SpeechLLMProcessor)
