"""Asking a model about audio: chat, transcribe, generate_meta. Batched; prompts built by `speechllm.prompting`,
as the training tasks build theirs, so a model is asked exactly as it was taught.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np
import torch

from ..audio import AudioInput, load_conversation_audio
from ..constraint import MetadataConstraint, MetadataResult, decode_results
from ..errors import ConfigError, InputError
from ..heads import HeadPrediction, encode_for_heads
from ..metadata import SPEECH_FIELD, MetadataSchema, serialize
from ..models.positions import bounded_new_tokens, room_for_answer
from ..prompt_styles import clip_passage, model_prompt_style
from ..prompting import instruction_for, instructions, prompt_message

NO_SPEECH_CERTAINTY = 0.99  # a speech-activity head's probability of "no speech" from which it answers "no speech"


def _batches(items: list, size: int):
    check_positive("batch_size", size)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _device_batch(model, conversations):
    batch = model.processor(load_conversation_audio(conversations, **model.processor.audio_limits))
    return {k: v.to(model.device) for k, v in batch.items()}


def chat(model, conversations, *, max_new_tokens: int = 256, batch_size: int = 8, **generate_kwargs) -> list[str]:
    """Answers to conversations (lists of messages with text and audio parts), greedy by default."""
    if conversations and isinstance(conversations[0], dict):
        conversations = [conversations]
    check_positive("max_new_tokens", max_new_tokens)
    generate_kwargs.setdefault("do_sample", False)
    answers, first = [], 0
    for group in _batches(list(conversations), batch_size):
        answers += _chat_batch(model, group, first, max_new_tokens, generate_kwargs)
        first += len(group)
    return answers


def _chat_batch(model, group: list, first: int, max_new_tokens: int, generate_kwargs: dict) -> list[str]:
    """Answers to one batch of conversations (numbered from `first` in errors). InputError when a prompt alone
    fills the LLM's positions; near the limit, rows whose answers the longest prompt would cut short run alone."""
    batch = _device_batch(model, group)
    limit = model.max_positions
    for i, length in enumerate(batch["attention_mask"].sum(1).tolist()):
        room_for_answer(limit, length, f"conversation {first + i}")
    if len(group) > 1 and limit is not None and batch["input_ids"].shape[1] + max_new_tokens > limit:
        return [text for i, conversation in enumerate(group)
                for text in _chat_batch(model, [conversation], first + i, max_new_tokens, generate_kwargs)]
    tokens = model.generate(**batch, max_new_tokens=max_new_tokens, **generate_kwargs)  # cut to the room left
    return [text.strip() for text in model.processor.decode(tokens)]


def transcribe(model, audio: AudioInput | Sequence[AudioInput], *, instruction: str | None = None,
               batch_size: int = 8, max_new_tokens: int = 256) -> str | list[str]:
    """Transcripts of one clip (a string back) or several (a list back). A model with a prompt style (its spec's
    `prompt_style`, e.g. few-shot for a base LLM) is asked in that style unless an `instruction` is given."""
    if instruction is not None:
        return _request(model, audio, "transcript", check_instruction(instruction), None, batch_size,
                        max_new_tokens, styled=False)
    return _request(model, audio, "transcript", instructions("asr")[0], None, batch_size, max_new_tokens)


def ask(model, audio: AudioInput | Sequence[AudioInput], question: str, *, batch_size: int = 8,
        max_new_tokens: int = 64) -> str | list[str]:
    """The answer to `question` about one clip (a string back) or each of several (a list back), worded in the
    model's prompt style as it was trained (a few-shot completion for gemma-bridge), else as a plain instruction."""
    question = check_instruction(question)
    return _request(model, audio, "question", question, question, batch_size, max_new_tokens)


def summarize(model, audio: AudioInput | Sequence[AudioInput], *, batch_size: int = 8,
              max_new_tokens: int = 128) -> str | list[str]:
    """A summary of one clip (a string back) or each of several (a list back), in the model's prompt style."""
    return _request(model, audio, "summary", instructions("summarization")[0], None, batch_size, max_new_tokens)


def _request(model, audio, request: str, instruction: str, question: str | None, batch_size: int,
             max_new_tokens: int, styled: bool = True) -> str | list[str]:
    """`request` about each clip: in the model's prompt style when it has one (and `styled`), a completion style
    stopping at the line break that ends its answer; else the plain `instruction` before the clip."""
    single = not isinstance(audio, (list, tuple)) or _is_array_pair(audio)
    clips = [audio] if single else list(audio)
    style = model_prompt_style(model) if styled else None
    if style is None:
        answers = chat(model, [[prompt_message(instruction, clip)] for clip in clips], batch_size=batch_size,
                       max_new_tokens=max_new_tokens)
    else:
        conversations = [[{"role": "user", "content": style.parts(request, clip_passage(clip), question=question)}]
                         for clip in clips]
        answers = [style.clean(a) for a in chat(model, conversations, batch_size=batch_size,
                                                max_new_tokens=max_new_tokens,
                                                **style.generate_options(model.processor.tokenizer))]
    return answers[0] if single else answers


def generate_meta(model, audio: AudioInput | Sequence[AudioInput], fields: Sequence[str] | None = None,
                  instruction: str | None = None, *, batch_size: int = 8, max_new_tokens: int | None = None,
                  min_confidence: float | None = None) -> MetadataResult | list[MetadataResult]:
    """Speaker metadata as schema-valid JSON, for any subset of fields in any order.

    Decoding is constrained: label fields can only take a label of their set and the answer is always
    well-formed JSON; each label field comes with the probability of the chosen label. No speech, no speaker:
    where SpeechActivity is false, speaker fields are null and the transcript "". `min_confidence` (0-1): a
    label answered with a lower confidence comes back null ("not sure"). One clip gives one MetadataResult, a
    list of clips a list.
    """
    schema = model.metadata_schema
    names = [fields] if isinstance(fields, str) else list(fields) if fields is not None else schema.names
    schema.subset(names)  # unknown field names fail here, naming the valid ones
    if max_new_tokens is not None:
        check_positive("max_new_tokens", max_new_tokens)
    check_min_confidence(min_confidence)
    single = not isinstance(audio, (list, tuple)) or _is_array_pair(audio)
    clips = [audio] if single else list(audio)
    instruction = instruction_for(names, schema) if instruction is None else check_instruction(instruction)
    results = []
    for group in _batches(clips, batch_size):
        batch = _device_batch(model, [[prompt_message(instruction, clip)] for clip in group])
        results += metadata_batch(model, batch, schema, names, max_new_tokens=max_new_tokens,
                                  min_confidence=min_confidence)[0]
    return results[0] if single else results


def metadata_batch(
    model, batch: dict, schema: MetadataSchema, names: Sequence[str], *, max_new_tokens: int | None = None,
    min_confidence: float | None = None, **generate_kwargs,
) -> tuple[list[MetadataResult], list[list[int]]]:
    """One constrained generate over a processed batch of one-clip metadata prompts: the results and each row's
    new tokens. Fields with an attribute head (heads.py) take the head's value, which the constraint makes the LLM
    write, and the head's (calibrated) probability as confidence; the LLM decides the other fields. No speech, no
    speaker: where SpeechActivity is false the speaker fields are null and the transcript empty (the constraint
    enforces it). `min_confidence`: label fields answered below it become null ("not sure")."""
    check_min_confidence(min_confidence)
    tokenizer, heads = model.processor.tokenizer, model.attribute_heads
    head_names = [n for n in names if heads is not None and n in heads.fields]
    # The speech-activity head decides "no speech, no speaker" even when SpeechActivity is not asked for.
    if (heads is not None and SPEECH_FIELD in heads.fields and SPEECH_FIELD not in head_names
            and any(schema.field(n).speaker for n in names)):
        head_names.append(SPEECH_FIELD)
    forced, audio_features, decisions = None, None, None
    if head_names:
        values, lengths = batch["audio_values"], batch["audio_lengths"]
        clips = [v[:n].float().cpu().numpy() for v, n in zip(values, lengths.tolist())]
        # The encoder runs once: the heads pool its frames (or layers), generate reads its output.
        head_frames, audio_features = encode_for_heads(model, values, lengths, heads.features_for(head_names))
        decisions = [_speech_decision(row) for row in heads.predict(clips, head_names, head_frames)]
        forced = [{n: d.value for n, d in row.items()} for row in decisions]
    constraint = MetadataConstraint(tokenizer, schema, names, forced=forced)
    # The constraint's worst-case length guarantees a complete answer; a smaller limit may cut it.
    limit = bounded_new_tokens(model.max_positions, batch["input_ids"].shape[1],
                               max_new_tokens or constraint.max_new_tokens or 512,
                               "the metadata prompt (instruction and audio)")
    constraint.budget = limit  # a transcript that would run past the limit is closed in time: the JSON stays whole
    out = model.generate(
        **batch, audio_features=audio_features, max_new_tokens=limit, do_sample=False,
        logits_processor=[constraint], output_scores=True, return_dict_in_generate=True,
        eos_token_id=tokenizer.eos_token_id,
        # Whisper's generation config suppresses JSON punctuation such as '"'; the grammar decides here.
        suppress_tokens=None, begin_suppress_tokens=None, **generate_kwargs,
    )
    results = decode_results(out.sequences, out.scores, tokenizer, schema, names)
    for r, result in enumerate(results):
        if decisions is not None:
            result.confidences.update({n: d.confidence for n, d in decisions[r].items() if n in result.values})
        if min_confidence is not None:
            abstain(result, schema, names, min_confidence)
    new_tokens = out.sequences[:, out.sequences.shape[1] - len(out.scores):].tolist()
    return results, new_tokens


def _speech_decision(row: dict) -> dict:
    """A row of head decisions under "no speech, no speaker". Answering "no speech" empties the transcript, so the
    head must be near-certain of it: a borderline call answers speech, with the head's (low) probability of it,
    rather than delete the words of a quiet real speaker. With no speech, every speaker field of the row is null,
    with the confidence of "no speech"."""
    speech = row.get(SPEECH_FIELD)
    if speech is None or speech.value is True:
        return row
    if speech.confidence < NO_SPEECH_CERTAINTY:
        return {**row, SPEECH_FIELD: HeadPrediction(True, 1.0 - speech.confidence)}
    # a null speaker field is as sure as the "no speech" it follows from
    return {n: d if n == SPEECH_FIELD else HeadPrediction(None, speech.confidence) for n, d in row.items()}


def abstain(result: MetadataResult, schema: MetadataSchema, names: Sequence[str], min_confidence: float) -> None:
    """Null ("not sure") for each label field of `result` whose confidence is below `min_confidence`; its
    confidence stays, so a caller sees how unsure it was. Bool fields (SpeechActivity) always answer."""
    unsure = [n for n, c in result.confidences.items()
              if c < min_confidence and schema.field(n).kind == "label" and result.values.get(n) is not None]
    for name in unsure:
        result.values[name] = None
    if unsure and result.valid:
        result.text = serialize(result.values, names, schema)


def check_min_confidence(value) -> None:
    """min_confidence is None or a probability, 0 to 1; ConfigError otherwise."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1):
        raise ConfigError(f"min_confidence must be a number from 0 to 1, got {value!r}")


def _is_array_pair(audio) -> bool:
    """(array, rate) is one clip, not a list of two: a tuple of two whose first item is samples or whose second is
    a number (16000, 16000.0, np.int64(16000)); load_audio then checks the rate."""
    if not (isinstance(audio, tuple) and len(audio) == 2):
        return False
    rate_like = isinstance(audio[1], numbers.Real) and not isinstance(audio[1], bool)
    return rate_like or isinstance(audio[0], (np.ndarray, torch.Tensor))


def check_instruction(instruction) -> str:
    """An instruction is non-empty text; InputError otherwise."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise InputError(f"an instruction must be non-empty text, got {instruction!r}")
    return instruction


def check_positive(name: str, value) -> None:
    """Batch sizes, token limits and counts are whole numbers of at least 1; ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive whole number, got {value!r}")
