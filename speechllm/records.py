"""The record layer: reading JSONL files line by line, and the checks every reader of them shares.

Four readers take JSONL manifests: training (`data.manifest`), evaluation (`evaluation.data`), `speechllm infer`
(`inference.batch`) and self-generated targets (`data.targets`). They all read through `read_jsonl`, so a bad
line is reported the same way everywhere: a `BadRow` whose text is `file:line: reason`. It sits beside `audio`
and `metadata`, not in `data/`, because inference reads manifests too and must not load the training-data layer.

    for line in read_jsonl("train.jsonl"):
        try:
            row = line.row()               # a dict, or BadRow("train.jsonl:3: invalid JSON (...)")
            offset, duration = row_segment(row)
        except BadRow as bad:
            print(bad)                     # train.jsonl:3: ...
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import soundfile as sf

from .audio_decode import counted_seconds, header_frames
from .errors import AudioError, DataError


class BadRow(Exception):
    """Why one row is unusable (`reason`) and, once known, where it is (`where`: "file:line" or "dataset[i]").
    Checks raise it with the reason alone; the reader that knows the line adds the place with `at`."""

    def __init__(self, reason: str, where: str | None = None):
        super().__init__(reason)
        self.reason, self.where = reason, where

    def at(self, where: str) -> BadRow:
        """This reason at `where` (a row's place is set once: an inner place is kept)."""
        return self if self.where is not None else BadRow(self.reason, where)

    def __str__(self) -> str:
        return self.reason if self.where is None else f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSONL file, undecoded: a line that is not UTF-8 spoils only itself."""

    path: Path
    number: int  # 1-based, blank lines counted
    text: bytes

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"

    def value(self) -> Any:
        """The line's JSON value; BadRow (at this line) when it is not UTF-8 text or not JSON."""
        try:
            return json.loads(self.text)
        except json.JSONDecodeError as e:
            raise BadRow(f"invalid JSON ({e.msg} at column {e.colno})", self.where) from None
        except UnicodeDecodeError as e:
            raise BadRow(f"not UTF-8 text (byte {e.start} of the line); save the manifest as UTF-8",
                         self.where) from None

    def row(self) -> dict:
        """The line's JSON object; BadRow (at this line) when it is not one."""
        value = self.value()
        if not isinstance(value, dict):
            raise BadRow(f"a row must be a JSON object, got {type(value).__name__}", self.where)
        return value


def read_jsonl(path: str | Path) -> Iterator[JsonLine]:
    """The non-blank lines of a JSONL file, numbered from 1 as an editor shows them, parsed only when asked
    (`JsonLine.row()`). DataError when the file does not exist."""
    path = Path(path)
    if not path.is_file():  # raised at the call, not at the first line
        raise DataError(f"manifest {path} not found")
    return _lines(path)


def _lines(path: Path) -> Iterator[JsonLine]:
    with path.open("rb") as lines:  # bytes: one line that is not UTF-8 is a bad row, not the end of the file
        for number, text in enumerate(lines, 1):
            if text.strip():
                yield JsonLine(path, number, text)


def row_segment(row: dict) -> tuple[float, float | None]:
    """(offset_s, duration_s or None) of a row: numbers of seconds, finite, offset_s >= 0 (default 0) and
    duration_s > 0 (absent: to the end of the file); BadRow otherwise."""
    offset, duration = row.get("offset_s"), row.get("duration_s")
    offset = 0.0 if offset is None else offset
    for key, value in (("offset_s", offset), ("duration_s", duration)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise BadRow(f"{key} must be a number of seconds, got {value!r}")
    if offset < 0 or (duration is not None and duration <= 0):
        raise BadRow(f"need offset_s >= 0 and duration_s > 0, got offset_s={offset}, duration_s={duration}")
    return float(offset), None if duration is None else float(duration)


def header_seconds(audio: str | dict, where: str = "audio") -> float:
    """A clip's length in seconds from its header (cheap: nothing is decoded); BadRow when unreadable.
    `audio` is a path or a datasets dict with "bytes"."""
    key = audio if isinstance(audio, str) else None
    if key is not None and not Path(key).is_file():
        raise BadRow(f"{where}: audio file {key} not found")
    try:
        info = sf.info(key if key is not None else io.BytesIO(audio["bytes"]))
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        reason = getattr(e, "error_string", None) or str(e)
        raise BadRow(f"{where}: cannot read the audio header of {key or '<bytes>'} ({reason})") from None
    frames = header_frames(info.frames)
    seconds = frames / info.samplerate if frames is not None else None
    if seconds is None:  # a streaming encoder's header gives no length: count the frames (5.8e14 s otherwise)
        try:
            seconds = counted_seconds(key if key is not None else io.BytesIO(audio["bytes"]), key or "<bytes>")
        except AudioError as e:
            raise BadRow(f"{where}: {e}") from None
    if seconds <= 0:
        raise BadRow(f"{where}: audio {key or '<bytes>'} is empty")
    return seconds
