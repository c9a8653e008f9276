"""Task templates: a Record -> a TrainingExample (a conversation that ends with the answer to train on).

Each task is one function registered with `@register_task(name, needs=...)`; adding a task touches this file
only. Prompts come from `speechllm.prompting`, as inference's do: instructions drawn from the task's paraphrase
pool (`instructions`), the metadata instruction (`instruction_for`), and every user turn laid out by
`prompt_message` (the instruction text first, then the audio), so training and inference see the same layout;
in the text-only teacher of distillation the transcript stands where the audio was ("Summarize ...\n<transcript>").
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..errors import ConfigError, DataError, InputError
from ..metadata import SPEECHLLM_SCHEMA, MetadataSchema, serialize
from ..prompt_styles import PromptStyle, clip_passage
from ..prompting import instruction_for, instructions, prompt_message

if TYPE_CHECKING:  # records are made by `manifest`, which checks them with `checked_task` from here
    from .manifest import Record


@dataclass
class TrainingExample:
    """A conversation ending with the assistant's answer (audio parts still references the processor loads),
    the transcript of each clip in order (None when any is unknown; distillation's teacher reads them in
    place of the audio), the task's name and the record's id."""

    conversation: list[dict]
    transcripts: list[str] | None
    task: str
    record_id: str


@dataclass(frozen=True)
class Task:
    name: str
    build: Callable[..., TrainingExample]  # (record, rng, schema, **options)
    needs: Callable[[Record, MetadataSchema], str | None]  # why a record cannot serve, or None

    @property
    def options(self) -> set[str]:
        """Keyword options the task takes (from a source's `options:`)."""
        params = list(inspect.signature(self.build).parameters.values())[3:]
        return {p.name for p in params}


TASKS: dict[str, Task] = {}


def register_task(name: str, needs: Callable[[Record, MetadataSchema], str | None]):
    """Register `build(record, rng, schema, **options) -> TrainingExample` as task `name`."""

    def add(build):
        if name in TASKS:
            raise ConfigError(f"task {name!r} is registered twice")
        TASKS[name] = Task(name, build, needs)
        return build

    return add


def _has(*attributes: str) -> Callable[[Record, MetadataSchema], str | None]:
    def needs(record: Record, schema: MetadataSchema) -> str | None:
        absent = [a for a in attributes if getattr(record, a) is None]
        return f"needs {' and '.join(repr(a) for a in absent)}" if absent else None

    return needs


def task_for(record: Record, default: str | None = None) -> str:
    """The task a record serves: its own `task`, else `default`, else what its keys suggest."""
    name = record.task or default
    if name is None:
        name = ("conversation" if record.conversation is not None else "instruction" if record.instruction
                else "metadata" if record.labels else "asr" if record.transcript is not None else None)
    if name is None:
        raise DataError("cannot tell which task this row is for: give a 'transcript', labels, an "
                        "'instruction' and 'response', a 'conversation', or a 'task'")
    return name


def missing_for(task: str, record: Record, schema: MetadataSchema = SPEECHLLM_SCHEMA) -> str | None:
    """Why `record` cannot serve `task` (unknown task, missing keys), or None when it can."""
    if task not in TASKS:
        return f"unknown task {task!r}; registered tasks are {sorted(TASKS)}"
    problem = TASKS[task].needs(record, schema)
    return f"task {task!r} {problem}" if problem else None


def checked_task(record: Record, default: str | None = None, schema: MetadataSchema = SPEECHLLM_SCHEMA) -> str:
    """The task `record` serves (`task_for`), once the record is found to have what that task needs; DataError
    with the reason otherwise. The finding is kept on the record, so the manifest reader's check is the only one
    unless the record is later asked for another task or schema."""
    name = task_for(record, default)
    if record.checked_for != (name, schema):
        problem = missing_for(name, record, schema)
        if problem:
            raise DataError(problem)
        record.checked_for = (name, schema)
    return name


def build_example(record: Record, task: str | None, rng: random.Random,
                  schema: MetadataSchema = SPEECHLLM_SCHEMA, style: PromptStyle | None = None,
                  **options) -> TrainingExample:
    """The TrainingExample of `record` for `task` (None: `task_for` decides); `rng` draws paraphrases and
    metadata subsets, so the same rng state gives the same example. With a prompt `style`, transcription, spoken
    question and summary examples are worded in it, as evaluation and inference word them. DataError when the
    record cannot serve it."""
    try:
        name = checked_task(record, task, schema)
    except DataError as e:
        raise DataError(f"{record.origin}: {e}") from None
    unknown = sorted(set(options) - TASKS[name].options)
    if unknown:
        raise ConfigError(f"task {name!r} takes no option(s) {unknown}; it takes {sorted(TASKS[name].options)}")
    example = TASKS[name].build(record, rng, schema, **options)
    return styled(example, record, style) if style is not None else example


# The tasks a prompt style words, and the style's request for each.
STYLED_REQUESTS = {"asr": "transcript", "spoken_qa": "question", "summarization": "summary"}


def styled(example: TrainingExample, record: Record, style: PromptStyle) -> TrainingExample:
    """`example` with its user turn worded by `style` (one clip, a task the style words), else unchanged. A spoken
    question without a written one keeps its pool instruction: the style has no slot for a question in the audio."""
    request = STYLED_REQUESTS.get(example.task)
    if request is None or (request == "question" and not record.instruction):
        return example
    parts = style.parts(request, clip_passage(record.audio_source()), question=record.instruction)
    conversation = [{"role": "user", "content": parts}, *example.conversation[1:]]
    return TrainingExample(conversation, example.transcripts, example.task, example.record_id)


def _example(record: Record, task: str, instruction: str, answer: str) -> TrainingExample:
    conversation = [prompt_message(instruction, record.audio_source()), {"role": "assistant", "content": answer}]
    transcripts = [record.transcript] if record.transcript is not None else None
    return TrainingExample(conversation, transcripts, task, record.id)


@register_task("asr", needs=_has("audio", "transcript"))
def asr(record: Record, rng: random.Random, schema: MetadataSchema) -> TrainingExample:
    return _example(record, "asr", rng.choice(instructions("asr")), record.transcript)


def _metadata_needs(record: Record, schema: MetadataSchema) -> str | None:
    if record.audio is None:
        return "needs 'audio'"
    values = record.metadata(schema)
    if not values:
        return f"needs a transcript or labels of the schema's fields {schema.names}"
    try:
        serialize(values, None, schema)
    except InputError as e:  # e.g. a transcript over the schema's max_chars
        return f"has values the schema rejects: {e}"
    return None


@register_task("metadata", needs=_metadata_needs)
def metadata(record: Record, rng: random.Random, schema: MetadataSchema, subset_prob: float = 0.2) -> TrainingExample:
    """All the record's fields in schema order; with probability `subset_prob` (SpeechLLM: 0.2) a random
    non-empty subset in random order, so the model learns to answer any request."""
    values = record.metadata(schema)
    names = list(values)
    if rng.random() < subset_prob:
        names = rng.sample(names, rng.randint(1, len(names)))
    return _example(record, "metadata", instruction_for(names, schema), serialize(values, names, schema))


@register_task("instruction", needs=_has("audio", "instruction", "response"))
def instruction(record: Record, rng: random.Random, schema: MetadataSchema) -> TrainingExample:
    return _example(record, "instruction", record.instruction, record.response)


@register_task("spoken_qa", needs=_has("audio", "response"))
def spoken_qa(record: Record, rng: random.Random, schema: MetadataSchema) -> TrainingExample:
    """The record's question about the audio or, without one, a pool instruction to answer the question
    spoken in the audio."""
    return _example(record, "spoken_qa", record.instruction or rng.choice(instructions("spoken_qa")), record.response)


@register_task("continuation", needs=_has("audio", "response"))
def continuation(record: Record, rng: random.Random, schema: MetadataSchema) -> TrainingExample:
    return _example(record, "continuation", rng.choice(instructions("continuation")), record.response)


@register_task("summarization", needs=_has("audio", "response"))
def summarization(record: Record, rng: random.Random, schema: MetadataSchema) -> TrainingExample:
    return _example(record, "summarization", rng.choice(instructions("summarization")), record.response)


@register_task("conversation", needs=_has("conversation"))
def conversation(record: Record, rng: random.Random, schema: MetadataSchema) -> TrainingExample:
    """The record's own conversation; audio parts without payload become the record's clip."""
    messages, clips = [], []
    for message in record.conversation:
        content = message["content"]
        if isinstance(content, list):
            content = [_fill(part, record, clips) for part in content]
        messages.append({"role": message["role"], "content": content})
    # The transcript is known only when the row's own clip is the single clip.
    transcripts = [record.transcript] if record.transcript is not None and clips == ["row"] else None
    return TrainingExample(messages, transcripts, "conversation", record.id)


def _fill(part: dict, record: Record, clips: list[str]) -> dict:
    if part["type"] != "audio":
        return dict(part)
    clips.append("row" if "audio" not in part else "other")
    return dict(part) if "audio" in part else {"type": "audio", "audio": record.audio_source()}


def task_options(task: str) -> set[str]:
    """The options `task` takes; ConfigError for an unknown task."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; registered tasks are {sorted(TASKS)}")
    return TASKS[task].options
