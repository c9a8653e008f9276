"""Batch inference over files, folders and manifests: what `speechllm infer` runs.

    for line in infer_clips(model, collect_inputs(["clips/", "extra.wav"]), fields=["Gender"]):
        print(json.dumps(line))

Each clip gives one dict, in input order: {"audio": name, ...answer...}, or {"audio": name, "error": message}
when the clip cannot be used (the others still run).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tqdm import tqdm

from ..audio import SAMPLE_RATE, AudioInput, load_audio, load_audio_segment
from ..errors import AudioError, ConfigError, DataError
from ..records import BadRow, read_jsonl, row_segment
from .api import ask, check_instruction, check_min_confidence, check_positive

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
log = logging.getLogger(__name__)


@dataclass
class InputClip:
    """One clip to answer about: its name in the output, what to decode, or why it cannot be decoded."""

    name: str
    source: AudioInput | None = None
    segment: tuple[float, float | None] | None = None  # (offset_s, duration_s) of a manifest row
    error: str | None = None


def _is_audio_input(path: Path) -> bool:
    return path.is_dir() or (path.is_file() and path.suffix.lower() in (*AUDIO_SUFFIXES, ".jsonl"))


def split_model_argument(arguments: Sequence[str]) -> tuple[str | None, list[str]]:
    """`speechllm infer [MODEL] AUDIO...` -> (model or None, audio arguments). The first argument is the model
    when it is a directory holding config.json, or when it is no existing audio file, folder or manifest.
    ConfigError when no audio argument is left."""
    model, audio = None, list(arguments)
    if audio and ((Path(audio[0]) / "config.json").is_file() or not _is_audio_input(Path(audio[0]))):
        model, audio = audio[0], audio[1:]
    if not audio:
        raise ConfigError("no audio given: speechllm infer [MODEL] AUDIO... (files, folders or .jsonl manifests)")
    return model, audio


def collect_inputs(arguments: Sequence[str]) -> list[InputClip]:
    """Files as given; folders searched recursively for wav/flac/ogg/mp3 (sorted); .jsonl manifests read row by
    row (`audio` relative to the manifest, optional `offset_s`/`duration_s`). A path that does not exist
    stays in the list and fails when decoded, with the audio loader's message."""
    clips = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                clips.append(InputClip(argument, error=f"folder {argument} holds no {'/'.join(AUDIO_SUFFIXES)} files"))
            clips += [InputClip(str(p), str(p)) for p in found]
        elif path.suffix.lower() == ".jsonl" and path.is_file():
            clips += _manifest_clips(path)
        else:
            clips.append(InputClip(argument, argument))
    return clips


def _manifest_clips(path: Path) -> list[InputClip]:
    """One InputClip per non-blank line; a bad line (not JSON, no 'audio' path, a bad segment) becomes an
    InputClip with its error, named `manifest:line`, so the other rows still run."""
    clips = []
    for line in read_jsonl(path):
        try:
            row = line.row()
            if not isinstance(row.get("audio"), str) or not row["audio"]:
                raise BadRow("expected a JSON object with an 'audio' path")
            row = {k: v for k, v in row.items() if v is not None}  # null means absent
            segment = row_segment(row) if "offset_s" in row or "duration_s" in row else None
        except BadRow as e:
            clips.append(InputClip(line.where, error=str(e.at(line.where))))
            continue
        source = str(path.parent / row["audio"])
        clips.append(InputClip(str(row.get("id") or source), source, segment))
    return clips


def _decode(model, clip: InputClip):
    if clip.error:
        raise AudioError(clip.error)
    if clip.segment is not None:
        samples = load_audio_segment(clip.source, *clip.segment, name=clip.name)
        return load_audio((samples, SAMPLE_RATE), **model.processor.audio_limits)  # the model's length checks
    return load_audio(clip.source, **model.processor.audio_limits)


def infer_clips(model, clips: Sequence[InputClip], *, fields: Sequence[str] | None = None,
                instruction: str | None = None, transcribe: bool = False, batch_size: int = 16,
                max_new_tokens: int = 256, progress: bool = True,
                min_confidence: float | None = None) -> Iterator[dict]:
    """Answer about each clip, batched; returns an iterator of one JSON-ready dict per clip, in order.

    Modes: `instruction` -> {"answer"} (free-form, `model.chat`); `transcribe` -> {"transcript"}; otherwise
    metadata -> the values of `fields` (default: every field of the model's schema) plus "confidences" and
    "valid" (and "problem" when the answer was cut off); speaker fields are null where SpeechActivity is false,
    and labels below `min_confidence` null ("not sure"). A clip that cannot be decoded -> {"error"}.
    Bad options (an unknown field, an empty instruction, batch_size or max_new_tokens below 1) raise here, before
    any clip is read."""
    if sum([instruction is not None, transcribe, fields is not None]) > 1:
        raise ConfigError("choose one of instruction, transcribe or fields")
    check_positive("batch_size", batch_size)
    check_positive("max_new_tokens", max_new_tokens)
    check_min_confidence(min_confidence)
    if instruction is not None:
        check_instruction(instruction)
    if fields is not None:
        model.metadata_schema.subset(list(fields))  # an unknown field fails here, naming the valid ones
    return _infer_clips(model, clips, fields, instruction, transcribe, batch_size, max_new_tokens, progress,
                        min_confidence)


def _infer_clips(model, clips, fields, instruction, transcribe, batch_size, max_new_tokens, progress,
                 min_confidence):
    bar = tqdm(total=len(clips), desc="infer", unit="clip", disable=None if progress else True)
    for start in range(0, len(clips), batch_size):
        group, decoded = clips[start:start + batch_size], {}
        errors = {}
        for i, clip in enumerate(group):
            try:
                decoded[i] = _decode(model, clip)
            except (AudioError, DataError) as e:
                errors[i] = str(e)
        answers = dict(zip(decoded, _answer(model, list(decoded.values()), fields, instruction, transcribe,
                                            max_new_tokens, min_confidence))) if decoded else {}
        for i, clip in enumerate(group):
            yield {"audio": clip.name, "error": errors[i]} if i in errors else {"audio": clip.name, **answers[i]}
        bar.update(len(group))
    bar.close()


def _answer(model, samples: list, fields, instruction, transcribe, max_new_tokens, min_confidence) -> list[dict]:
    audio = [(s, SAMPLE_RATE) for s in samples]
    if instruction is not None:  # worded as the model was trained (its prompt style), else a plain instruction
        texts = ask(model, audio, instruction, max_new_tokens=max_new_tokens, batch_size=len(audio))
        return [{"answer": t} for t in texts]
    if transcribe:
        texts = model.transcribe(audio, batch_size=len(audio), max_new_tokens=max_new_tokens)
        return [{"transcript": t} for t in texts]
    results = model.generate_meta(audio, fields, batch_size=len(audio), min_confidence=min_confidence)
    return [{**r.values, "confidences": r.confidences, "valid": r.valid, **({"problem": r.error} if r.error else {})}
            for r in results]


def check_output_path(out: str | Path, arguments: Sequence[str], clips: Sequence[InputClip] = ()) -> Path:
    """`out` as a results file: ConfigError when it is a folder, its folder does not exist, or it is one of the
    inputs (an argument, or a clip a manifest names), compared as resolved paths, so the run cannot overwrite
    what it reads."""
    path = Path(out)
    if path.is_dir() or not path.absolute().parent.is_dir():
        raise ConfigError(f"--out {out}: not a file in an existing folder")
    target = path.resolve()
    for source in [*arguments, *(c.source for c in clips if isinstance(c.source, (str, Path)))]:
        if Path(source).resolve() == target:
            raise ConfigError(f"--out {out} is one of the inputs ({source}); write the results to another file")
    return path


def write_json_lines(lines: Iterable[dict], out: str | Path | None = None) -> int:
    """Write each dict as a JSON line to `out`, or to stdout when None; returns how many held an "error".

    A file is written as `out.partial` beside it and renamed over `out` only once every line is written, so
    a run that fails or is killed half-way leaves an earlier `out` whole (its lines so far stay in the
    `.partial` file, which the next run overwrites)."""
    failed = 0
    if out is None:
        for line in lines:
            failed += "error" in line
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        return failed
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    lines = iter(lines)
    first = next(lines, None)  # a run that fails before its first answer writes nothing at all
    try:
        with open(partial, "w", encoding="utf-8") as f:
            for line in itertools.chain([] if first is None else [first], lines):
                failed += "error" in line
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
                f.flush()
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if partial.exists():
            log.warning("the run stopped before its end: %s was left as it was; the lines written so far are in %s",
                        out, partial)
        raise
    os.replace(partial, out)
    return failed
