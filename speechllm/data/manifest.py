"""Training data as manifests: one JSON object per line, one audio clip (or conversation) per object.

Manifest format (JSONL, UTF-8; blank lines are ignored):

    {"id": "utt1", "audio": "clips/utt1.wav", "transcript": "hello there", "gender": "female", "age": "young"}
    {"audio": "/data/book.flac", "offset_s": 12.5, "duration_s": 4.0, "transcript": "a segment of a long file"}
    {"audio": "talk.wav", "instruction": "What is the speaker's main point?", "response": "That tests matter."}
    {"audio": "a.wav", "conversation": [
        {"role": "user", "content": [{"type": "text", "text": "Compare the two clips.\\n"},
                                     {"type": "audio"}, {"type": "audio", "audio": "b.wav"}]},
        {"role": "assistant", "content": "The second speaker is faster."}]}

Keys (any other key is an error, unless passed to `read_manifest(ignore_keys=...)` or one of the descriptive
keys `voice`, `split`, `dataset`, `speaker`, `language` and the spoken passages' `questions`, `summary`, `kind`,
`length`, which are accepted and unused in training; `null` means absent):
- `audio`: path of the clip, relative to the manifest's folder or absolute. Required, except in a
  `conversation` row whose every audio part names its own file.
- `offset_s`, `duration_s`: a segment of a longer file, in seconds (from `offset_s`, to the end when
  `duration_s` is absent). Only that segment is decoded.
- `transcript`: what is said (non-empty when given).
- metadata labels, the schema's other fields in lower-case snake case: `speech_activity`, `gender`, `age`,
  `accent`, `emotion` for the SpeechLLM schema. Corpus spellings are mapped to the schema's
  labels by `metadata.normalize_label` ("female" -> "Female", "middle age" -> "Middle-Age"); a value with
  no counterpart is an error (leave the key out instead).
- `instruction` + `response`: a free-form request about the audio and its answer (e.g. teacher targets).
  `response` alone is the answer of a task whose instruction comes from a paraphrase pool (summary,
  continuation, answer to a spoken question).
- `conversation`: chat messages ending with the assistant's answer. An audio part without payload
  (`{"type": "audio"}`) is this row's `audio`; one with `"audio": "path"` names another clip (same path rules).
- `task`: pins the task template that turns this row into a training example (see `speechllm.data.tasks`).
- `id`: a name for the row in reports; default `<manifest stem>:<line>`.

`read_manifest` checks every row before training starts (JSON, keys, types, labels, audio files exist and
their headers read, segments lie inside their files) and reports each bad row as `file:line: problem`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from ..audio import SAMPLE_RATE, AudioInput, load_audio, load_audio_segment
from ..errors import DataError
from ..metadata import SPEECHLLM_SCHEMA, MetadataSchema, normalize_label
from ..prompting import TRANSCRIPT_FIELD
from ..records import BadRow, header_seconds, read_jsonl, row_segment
from .tasks import checked_task

OnBadRow = Literal["error", "skip"]

BASE_KEYS = ("id", "audio", "offset_s", "duration_s", "transcript", "instruction", "response", "conversation", "task")
# Descriptive keys that corpora carry (the synthetic corpus writes voice and split): accepted, not used.
# Spoken passages (data.synth.passages) add their questions, summary, kind and length, which evaluation reads.
INFO_KEYS = ("voice", "split", "dataset", "speaker", "language", "questions", "summary", "kind", "length")
# A segment may run past the header's length by this much (durations rounded to ms in the manifest).
SEGMENT_TOLERANCE_S = 0.02


@dataclass
class Record:
    """One validated row. `audio` is an absolute path or a datasets dict {"path", "bytes"}; `labels` maps schema
    field names to normalised values; `seconds` is how long the clip the model hears is, when known."""

    audio: str | dict | None
    id: str
    origin: str  # "manifest.jsonl:12" or "dataset[3]": where error messages point
    offset_s: float = 0.0
    duration_s: float | None = None
    transcript: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    instruction: str | None = None
    response: str | None = None
    conversation: list | None = None
    task: str | None = None
    seconds: float | None = None
    # (task, schema) this record was found fit for (`tasks.checked_task`), so the check runs once per record.
    checked_for: tuple | None = field(default=None, repr=False, compare=False)

    def audio_source(self) -> AudioInput:
        """What an audio content part carries: the path or dict itself, so the processor decodes it; a segment
        is decoded here (the processor takes whole clips only) into an (array, rate) tuple."""
        if not self.offset_s and self.duration_s is None:
            return self.audio
        if isinstance(self.audio, dict):  # embedded bytes: decode all, then cut
            samples = load_audio(self.audio, name=self.origin)
            start = round(self.offset_s * SAMPLE_RATE)
            end = None if self.duration_s is None else start + round(self.duration_s * SAMPLE_RATE)
            return samples[start:end], SAMPLE_RATE
        return load_audio_segment(self.audio, self.offset_s, self.duration_s, name=self.origin), SAMPLE_RATE

    def metadata(self, schema: MetadataSchema) -> dict[str, Any]:
        """The values this record has for `schema`'s fields, in schema order (the transcript included)."""
        values = dict(self.labels)
        if self.transcript is not None:
            values[TRANSCRIPT_FIELD] = self.transcript
        return {name: values[name] for name in schema.names if name in values}


@dataclass
class ManifestData:
    """The records of a manifest or dataset, and the rows skipped with on_bad_row="skip": (line, reason)."""

    path: str
    records: list[Record]
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]


def label_keys(schema: MetadataSchema) -> dict[str, str]:
    """Manifest key -> schema field, for every field but the transcript: "SpeechActivity" -> "speech_activity"."""
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", f.name).replace("-", "_").lower(): f.name
            for f in schema.fields if f.name != TRANSCRIPT_FIELD}


def read_manifest(
    path: str | Path,
    schema: MetadataSchema | None = None,
    *,
    on_bad_row: OnBadRow = "error",
    check_audio: bool = True,
    task: str | None = None,
    ignore_keys: Iterable[str] = (),
) -> ManifestData:
    """Read and validate a JSONL manifest (format above) against `schema` (default: SpeechLLM's).

    on_bad_row="error" raises DataError("file:line: problem") at the first bad row; "skip" leaves bad rows out
    and lists them in `ManifestData.skipped` as (1-based line, reason). `check_audio=False` skips the file
    existence and header checks (fast for huge manifests; bad files then fail when loaded). `task` is the task
    for rows that pin none: when given, each row must have what that task needs. `ignore_keys` are keys
    accepted and dropped (documentation columns such as `speaker`).
    """
    path = Path(path)
    lines = read_jsonl(path)  # DataError here when the file is missing
    parser = RowParser(schema or SPEECHLLM_SCHEMA, path.parent, check_audio, task, ignore_keys)
    data = ManifestData(str(path), [])
    for line in lines:
        try:
            data.records.append(parser.parse(line.row(), f"{path.stem}:{line.number}", line.where))
        except BadRow as e:
            if on_bad_row == "error":
                raise DataError(f"{e.at(line.where)} (on_bad_row='skip' leaves bad rows out)") from None
            data.skipped.append((line.number, e.reason))
    return data


class RowParser:
    """Checks one row (a dict) and turns it into a Record; raises BadRow with the reason."""

    def __init__(self, schema, base_dir: Path, check_audio: bool, task: str | None, ignore_keys: Iterable[str] = ()):
        self.schema, self.check_audio, self.task = schema, check_audio, task
        self.base_dir = Path(base_dir).absolute()  # records stay valid whatever the working directory
        self.labels = label_keys(schema)
        self.keys = set(BASE_KEYS) | set(self.labels)
        self.ignore = set(ignore_keys) | set(INFO_KEYS)
        self.seen_ids: set[str] = set()
        self._lengths: dict[str, float] = {}  # path -> seconds: many segments share one long file

    def parse(self, row: dict, default_id: str, origin: str) -> Record:
        unknown = sorted(set(row) - self.keys - self.ignore)
        if unknown:
            raise BadRow(f"unknown key(s) {unknown}; valid keys are {sorted(self.keys)}")
        row = {k: v for k, v in row.items() if v is not None and k not in self.ignore}
        record = Record(audio=None, id=_text(row, "id") or default_id, origin=origin)
        if record.id in self.seen_ids:
            raise BadRow(f"id {record.id!r} appears twice")
        record.transcript = _text(row, "transcript")
        record.instruction, record.response = _text(row, "instruction"), _text(row, "response")
        if record.instruction is not None and record.response is None:
            raise BadRow("an 'instruction' needs its 'response' (the answer to train on)")
        record.task = _text(row, "task")
        for key, name in self.labels.items():
            if key in row:
                text = self.schema.field(name).kind == "text"  # free text (custom schemas): kept as given
                record.labels[name] = _text(row, key) if text else self._label(name, key, row[key])
        if "audio" in row:
            record.audio = self._audio(row["audio"], "audio")
            record.offset_s, record.duration_s = row_segment(row)
            record.seconds = self._check_segment(record)
        elif "offset_s" in row or "duration_s" in row:
            raise BadRow("'offset_s'/'duration_s' need an 'audio' key")
        if "conversation" in row:
            if record.instruction is not None:
                raise BadRow("give either 'conversation' or 'instruction'/'response', not both")
            record.conversation = self._conversation(row["conversation"], has_audio=record.audio is not None)
        elif record.audio is None:
            raise BadRow("missing 'audio' (the path of the clip)")
        self._check_task(record)
        self.seen_ids.add(record.id)
        return record

    def _label(self, name: str, key: str, raw: Any):
        value = normalize_label(name, raw, self.schema)
        if value is None:
            f = self.schema.field(name)
            allowed = list(f.labels) if f.kind == "label" else [True, False]
            raise BadRow(f"{key}={raw!r} is not one of the schema's {name} labels {allowed}; "
                         "map it or leave the key out")
        return value

    def _audio(self, value: Any, where: str) -> str | dict:
        """A path (resolved against the manifest's folder) or a datasets dict, checked when check_audio."""
        if isinstance(value, dict):
            if not value.get("bytes") and not value.get("path"):
                raise BadRow(f"{where}: an audio dict needs 'path' or 'bytes', got keys {sorted(value)}")
            if not value.get("bytes"):
                value = str(self.base_dir / value["path"])
        elif not isinstance(value, str) or not value.strip():
            raise BadRow(f"{where}: expected a file path, got {value!r}")
        else:
            value = str(self.base_dir / value)
        if self.check_audio:
            self._length(value, where)
        return value

    def _length(self, audio: str | dict, where: str) -> float:
        if not isinstance(audio, str):
            return header_seconds(audio, where)
        if audio not in self._lengths:
            self._lengths[audio] = header_seconds(audio, where)
        return self._lengths[audio]

    def _check_segment(self, record: Record) -> float | None:
        """The heard length; the segment must lie inside the file. A segment that is the whole file is dropped,
        so the clip stays a lazy path."""
        if not self.check_audio:
            return record.duration_s
        total = self._length(record.audio, "audio")
        offset, duration = record.offset_s, record.duration_s
        if offset >= total:
            raise BadRow(f"offset_s={offset} is past the end of the audio ({total:.3f} s)")
        end = total if duration is None else offset + duration
        if end > total + SEGMENT_TOLERANCE_S:
            raise BadRow(f"segment {offset:.3f}-{end:.3f} s runs past the end of the audio ({total:.3f} s)")
        if duration is not None and end > total:
            record.duration_s = duration = total - offset  # within rounding: clamp
        if offset == 0 and (duration is None or duration >= total - SEGMENT_TOLERANCE_S):
            record.duration_s = None
        return total - offset if duration is None else duration

    def _conversation(self, messages: Any, has_audio: bool) -> list:
        """Messages checked for shape; explicit audio paths resolved; payload-less audio parts kept as-is."""
        if not isinstance(messages, list) or not messages:
            raise BadRow("'conversation' must be a non-empty list of messages")
        out = []
        for i, message in enumerate(messages):
            where = f"conversation[{i}]"
            if not isinstance(message, dict) or set(message) != {"role", "content"}:
                raise BadRow(f"{where}: a message is {{'role': ..., 'content': ...}}, got {message!r}"[:200])
            role, content = message["role"], message["content"]
            if role not in ("system", "user", "assistant"):
                raise BadRow(f"{where}: role {role!r} is not system, user or assistant")
            if isinstance(content, str):
                out.append({"role": role, "content": content})
                continue
            if role == "assistant" or not isinstance(content, list):
                expected = "a string" if role == "assistant" else "a string or a list of parts"
                raise BadRow(f"{where}: content must be {expected}")
            parts = []
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str) and set(part) == {"type", "text"}:
                    parts.append(dict(part))
                elif kind == "audio" and set(part) <= {"type", "audio"}:
                    if part.get("audio") is None and not has_audio:
                        raise BadRow(f"{where}.content[{j}]: an audio part without a path needs the row's 'audio'")
                    audio = part.get("audio")
                    parts.append({"type": "audio"} if audio is None else
                                 {"type": "audio", "audio": self._audio(audio, f"{where}.content[{j}]")})
                else:
                    raise BadRow(f"{where}.content[{j}]: expected {{'type': 'text', 'text': str}} or "
                                 f"{{'type': 'audio'[, 'audio': path]}}, got {part!r}"[:200])
            out.append({"role": role, "content": parts})
        last = out[-1]
        if last["role"] != "assistant" or not last["content"].strip():
            raise BadRow("a conversation must end with a non-empty assistant message (the training target)")
        return out

    def _check_task(self, record: Record) -> None:
        try:
            checked_task(record, self.task, self.schema)
        except DataError as e:
            raise BadRow(str(e)) from None


def _text(row: dict, key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRow(f"{key} must be a string, got {value!r}")
    if not value.strip():
        raise BadRow(f"{key} is empty; leave the key out when there is none")
    return value


def audio_seconds(record: Record) -> float:
    """How long the clip the model hears is: `record.seconds`, or from the header (then stored)."""
    if record.seconds is None:
        try:
            total = header_seconds(record.audio)
        except BadRow as e:
            raise DataError(f"{record.origin}: {e}") from None
        record.seconds = record.duration_s or max(total - record.offset_s, 0.0)
    return record.seconds
