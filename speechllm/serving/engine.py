"""What the model worker runs: one batched generate for a group of compatible jobs.

Runs on the batcher's single worker thread (never on the event loop). Each job carries a cancel event; a
stopping criterion reads them, so a request whose client left or timed out stops costing compute.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ..constraint import MetadataResult
from ..inference import metadata_batch


@dataclass(frozen=True)
class GenerateSettings:
    """Decoding options of a text answer; jobs batch together only when these are equal."""

    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float | None = None
    seed: int | None = None
    min_tokens: int = 0

    def __post_init__(self):
        if self.temperature == 0:  # greedy ignores them: dropping them lets such requests share a batch
            object.__setattr__(self, "top_p", None)
            object.__setattr__(self, "seed", None)

    def generate_kwargs(self) -> dict:
        kwargs = {"max_new_tokens": self.max_tokens, "do_sample": self.temperature > 0}
        if self.temperature > 0:
            kwargs.update(temperature=self.temperature, top_p=self.top_p or 1.0)
        if self.min_tokens:
            kwargs["min_new_tokens"] = min(self.min_tokens, self.max_tokens)
        return kwargs


@dataclass(frozen=True)
class MetaSettings:
    """A metadata answer: which fields (None: all), a token cap (None: the constraint's own bound), and the
    confidence below which a label answers null, "not sure" (None: always answer)."""

    fields: tuple[str, ...] | None
    max_tokens: int | None = None
    min_confidence: float | None = None


@dataclass(eq=False)
class Job:
    """One request for the model. `payload`: its prompt, tokenised and checked before it was queued (an
    EncodedConversation, see prompts.py), so a batch never fails on one request's prompt. Kind "generate" answers
    in text, kind "meta" (a one-clip metadata prompt) with constrained metadata JSON. `on_text` (streaming only)
    receives text pieces as they are decoded, then None at the end."""

    kind: str
    payload: Any
    settings: GenerateSettings | MetaSettings
    on_text: Callable[[str | None], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    key: tuple = ()  # jobs with equal keys may share a batch; set by the batcher
    future: Any = None
    arrived: float = 0.0


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    metadata: MetadataResult | None = None


class CancelRows(StoppingCriteria):
    """Stops the rows whose job was cancelled. `per_row=False` stops only once every row is cancelled: constrained
    metadata decoding cannot take the padding a stopped row receives while the others go on."""

    def __init__(self, events: list[threading.Event], per_row: bool = True):
        self.events, self.per_row = events, per_row

    def __call__(self, input_ids, scores, **kwargs):
        flags = [e.is_set() for e in self.events]
        if not self.per_row:
            flags = [all(flags)] * len(flags)
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


class TextStreamer(BaseStreamer):
    """Decodes tokens of a batch-of-one generate as they come and passes each new piece of text to `emit`."""

    def __init__(self, tokenizer, emit: Callable[[str], None]):
        self.tokenizer, self.emit, self.ids, self.sent, self.prompt_seen = tokenizer, emit, [], 0, False

    def put(self, value):
        if not self.prompt_seen:  # generate first passes the prompt (empty: the model is fed embeddings)
            self.prompt_seen = True
            return
        self.ids += value.reshape(-1).tolist()
        # hold back trailing whitespace and half-decoded characters: the whole answer is stripped, as chat() does
        self._emit(self._text().rstrip().rstrip("\ufffd"))

    def end(self):
        self._emit(self._text().strip())

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()

    def _emit(self, text: str) -> None:
        if len(text) > self.sent:
            self.emit(text[self.sent:])
            self.sent = len(text)


# Sampling draws from torch's global generator, which every model thread shares: a sampling generate holds this lock,
# so a seeded answer repeats whatever the server's other models are doing meanwhile. Greedy decoding runs in parallel.
_SAMPLING = threading.Lock()


def run_batch(model, jobs: list[Job]) -> list[Answer]:
    """Answers to jobs of one kind and equal settings, as one batched generate."""
    if jobs[0].kind == "meta":
        return _run_meta(model, jobs)
    return _run_generate(model, jobs)


def _device_batch(model, jobs: list[Job]) -> dict:
    """The jobs' encoded prompts, left-padded into one batch on the model's device."""
    batch = model.processor.collate([job.payload for job in jobs], "left")
    batch.pop("labels")
    return {k: v.to(model.device) for k, v in batch.items()}


def _run_generate(model, jobs: list[Job]) -> list[Answer]:
    settings = jobs[0].settings
    batch = _device_batch(model, jobs)
    streamer = TextStreamer(model.processor.tokenizer, jobs[0].on_text) if jobs[0].on_text else None
    with _SAMPLING if settings.temperature > 0 else contextlib.nullcontext():
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        tokens = model.generate(**batch, **settings.generate_kwargs(), streamer=streamer,
                                stopping_criteria=StoppingCriteriaList([CancelRows([j.cancel for j in jobs])]))
    return _answers(model, batch, tokens.tolist(), set(model.processor.end_of_turn_ids))


def _run_meta(model, jobs: list[Job]) -> list[Answer]:
    settings, tokenizer, schema = jobs[0].settings, model.processor.tokenizer, model.metadata_schema
    names = list(settings.fields) if settings.fields else schema.names
    batch = _device_batch(model, jobs)  # prompts.meta_job asked as generate_meta does, with the fields' instruction
    results, new = metadata_batch(model, batch, schema, names, max_new_tokens=settings.max_tokens,
                                  min_confidence=settings.min_confidence,
                                  stopping_criteria=StoppingCriteriaList([CancelRows([j.cancel for j in jobs], False)]))
    answers = _answers(model, batch, new, {tokenizer.eos_token_id})
    for answer, result in zip(answers, results):
        answer.text, answer.metadata = result.text, result
    return answers


def _answers(model, batch, rows: list[list[int]], stops: set[int]) -> list[Answer]:
    pad = model.processor.tokenizer.pad_token_id
    answers = []
    for row, prompt in zip(rows, batch["attention_mask"].sum(1).tolist()):
        end = next((i for i, t in enumerate(row) if t in stops), None)
        if end is None:  # no end of turn: cut by max_tokens, or stopped (then padded) by a cancel
            end = len(row)
            while end and row[end - 1] == pad:
                end -= 1
        text = model.processor.tokenizer.decode(row[:end], skip_special_tokens=True).strip()
        finish = "stop" if end < len(row) and row[end] in stops else "length"
        answers.append(Answer(text, int(prompt), end, finish))
    return answers
