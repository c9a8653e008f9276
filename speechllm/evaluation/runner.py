"""`evaluate`: a speech LLM answers metadata requests about every clip of evaluation manifests, by real batched
autoregressive decoding (no teacher forcing), and is scored beside baselines on the same clips in the same run.

    report = evaluate(speechllm.load("my-model"), "dev.jsonl", out_dir="runs/eval")

The model is asked, with `generate_meta` (constrained decoding), for the schema fields that the manifests have
labels for; the transcript scored for WER is the Transcript field of that same answer. Clips marked
speech_activity false, or without a reference transcript, are left out of WER, and a speaker field (Gender, Accent,
...) is scored only where the reference has speech. The report adds per-group slices (reference gender, accent,
dataset: calibration's `slices.py`) and, per label field, the calibration of its confidences (`calibration.py`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from speechllm.audio import load_audio
from speechllm.errors import AudioError, ConfigError
from speechllm.inference import check_positive
from speechllm.metadata import SPEECH_FIELD, MetadataSchema
from speechllm.prompting import TRANSCRIPT_FIELD

from . import cascade as cascade_asr
from .calibration import calibration_report
from .data import EvalData, read_eval_manifests
from .metrics import classification, corpus_wer, majority_label
from .report import write_report
from .slices import ProgressLine, slice_report

BASELINES = ("cascade", "majority")


def evaluate(model, manifest, *, fields: Sequence[str] | None = None, batch_size: int = 16,
             baselines: Sequence[str] = BASELINES, out_dir, limit: int | None = None,
             model_name: str | None = None, progress: bool = True) -> dict:
    """Evaluate `model` on one manifest path or a list of them -> the report dict (also written to `out_dir` as
    report.json, report.md, predictions.jsonl and confusion-<Field>.png).

    `fields`: the schema fields to ask for (default: every field of the model's schema that the manifests
    label). `baselines`: any of "cascade" (faster-whisper tiny.en, for WER) and "majority" (each attribute's
    most frequent label in the evaluated set). `limit`: the first N usable rows of each manifest. `progress`: a
    bar on a terminal, else a line on stderr every half minute (clips done, elapsed, time left).
    """
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ConfigError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    check_positive("batch_size", batch_size)
    if limit is not None:
        check_positive("limit", limit)
    if Path(out_dir).exists() and not Path(out_dir).is_dir():  # found now, not after the whole evaluation
        raise ConfigError(f"out_dir {out_dir} is a file; the report needs a folder")
    schema = model.metadata_schema
    data = read_eval_manifests(manifest, schema, limit)
    if not data.records:
        raise ConfigError(f"no usable rows in {manifest}: {json.dumps(data.skipped)[:500]}")
    names = choose_fields(data, schema, fields)
    asr = None
    if "cascade" in baselines and TRANSCRIPT_FIELD in names:
        reason = cascade_asr.unavailable_reason()
        asr = reason or cascade_asr.CascadeASR()
    predictions = []
    # disable=None: a bar only when stderr is a terminal
    bar = tqdm(total=len(data.records), desc="eval", unit="clip", disable=None if progress else True)
    lines = ProgressLine(len(data.records)) if progress and bar.disable else None  # no terminal: lines instead
    for group, records in data.groups.items():
        for start in range(0, len(records), batch_size):
            predictions += _run_batch(model, records[start:start + batch_size], group, schema, names, asr)
            bar.update(len(records[start:start + batch_size]))
            if lines is not None:
                lines.update(len(records[start:start + batch_size]))
    bar.close()
    report = {
        "model": model_name or getattr(model.config, "_name_or_path", "") or "model",
        "manifests": [str(m) for m in ([manifest] if isinstance(manifest, (str, Path)) else manifest)],
        "fields": names,
        "device": str(model.device),
        "wer_normalizer": "whisper_normalizer.english.EnglishTextNormalizer",
        "groups": {g: summarize([p for p in predictions if p["dataset"] == g], names, schema) for g in data.groups},
        "all": summarize(predictions, names, schema),
        "slices": slice_report(predictions, lambda rows: summarize(rows, names, schema)),
        "calibration": calibration_report(predictions, names, schema),
        "baselines": _baselines(predictions, names, schema, baselines, asr, list(data.groups)),
        "skipped_rows": {path: rows for path, rows in data.skipped.items() if rows},
        "failed_clips": [{"id": p["id"], "error": p["error"]} for p in predictions if p.get("audio_error")],
        "unmapped_labels": {name: dict(counts) for name, counts in data.unmapped.items()},
    }
    write_report(report, predictions, out_dir)
    return report


def choose_fields(data: EvalData, schema: MetadataSchema, fields: Sequence[str] | None) -> list[str]:
    """The fields to ask for, in schema order: the given ones (checked against the schema), else every schema
    field that some record has a reference for."""
    if fields is not None:
        for name in fields:
            schema.field(name)  # ConfigError naming the valid fields
        return [n for n in schema.names if n in fields]
    labelled = {name for record in data.records for name in record.metadata(schema)}
    names = [n for n in schema.names if n in labelled]
    if not names:
        raise ConfigError(f"the manifests label none of the model's fields {schema.names}")
    return names


def _run_batch(model, records, group: str, schema: MetadataSchema, names: list[str], asr) -> list[dict]:
    """Decode one batch's audio (a bad clip becomes a failed prediction), ask the model, and the cascade for the
    WER clips; processing times exclude audio decoding, which both systems share."""
    rows, clips = [], []
    for record in records:
        row = {"id": record.id, "dataset": group, "audio": record.audio if isinstance(record.audio, str) else None,
               "reference": record.metadata(schema)}
        try:
            clips.append(load_audio(record.audio_source(), **model.processor.audio_limits))
            row["seconds"] = len(clips[-1]) / 16000
            rows.append((row, record))
        except AudioError as e:
            rows.append(({**row, "audio_error": True, "error": str(e), "valid": False, "json_valid": False}, None))
    good = [(row, record) for row, record in rows if record is not None]
    if good:
        started = time.perf_counter()
        results = model.generate_meta([(clip, 16000) for clip in clips], names, batch_size=len(clips))
        share = (time.perf_counter() - started) / len(clips)  # one batch: its time split evenly over its clips
        for (row, _), result in zip(good, results):
            row.update(prediction=result.values, confidences=result.confidences, text=result.text,
                       valid=result.valid, json_valid=result.valid and _json_valid(result.text, names),
                       error=result.error, processing_s=share)
        if isinstance(asr, cascade_asr.CascadeASR):
            for (row, _), clip in zip(good, clips):
                if not _has_wer_reference(row):
                    continue
                started = time.perf_counter()
                row["cascade_transcript"] = asr.transcribe([clip])[0]
                row["cascade_s"] = time.perf_counter() - started
    return [row for row, _ in rows]


def _json_valid(text: str, names: list[str]) -> bool:
    """An independent check of the answer text: one JSON object with exactly the requested keys, in order."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and list(value) == list(names)


def summarize(predictions: list[dict], names: list[str], schema: MetadataSchema) -> dict:
    """The model's scores over `predictions` (rows of `_run_batch`): WER, per-attribute classification, JSON
    validity, real-time factor (processing seconds / audio seconds) and clips per second."""
    done = [p for p in predictions if not p.get("audio_error")]
    out = {"clips": len(predictions), "failed": len(predictions) - len(done)}
    if TRANSCRIPT_FIELD in names:
        wer_rows = [p for p in done if _has_wer_reference(p)]
        out["wer"] = corpus_wer([p["reference"][TRANSCRIPT_FIELD] for p in wer_rows],
                                [p["prediction"].get(TRANSCRIPT_FIELD, "") for p in wer_rows])
    out["attributes"] = {}
    for name in names:
        if schema.field(name).kind == "text":
            continue
        # no speech, no speaker: a speaker field is scored where the reference has speech
        rows = [p for p in done if _scored(p, name, schema)]
        labels = schema.field(name).labels or (True, False)
        out["attributes"][name] = classification([p["reference"][name] for p in rows],
                                                 [p["prediction"].get(name) for p in rows], labels)
    seconds = sum(p["seconds"] for p in done)
    busy = sum(p["processing_s"] for p in done)
    out.update(json_valid=sum(p["json_valid"] for p in done) / len(done) if done else None,
               audio_s=seconds, processing_s=busy, rtf=busy / seconds if seconds else None,
               clips_per_s=len(done) / busy if busy else None)
    return out


def _scored(p: dict, name: str, schema: MetadataSchema) -> bool:
    """Whether field `name` is scored on row `p`: the reference labels it, and, for a speaker field (no speech, no
    speaker), the reference has speech."""
    return name in p["reference"] and not (schema.field(name).speaker and p["reference"].get(SPEECH_FIELD) is False)


def _has_wer_reference(p: dict) -> bool:
    return TRANSCRIPT_FIELD in p["reference"] and p["reference"].get(SPEECH_FIELD) is not False


def _baselines(predictions, names, schema, baselines, asr, groups) -> dict:
    out = {}
    if "cascade" in baselines and TRANSCRIPT_FIELD in names:
        if isinstance(asr, str):
            out["cascade"] = {"system": cascade_asr.CASCADE_NAME, "skipped": asr}
        else:
            out["cascade"] = {"system": cascade_asr.CASCADE_NAME,
                              "all": _cascade_scores(predictions),
                              "groups": {g: _cascade_scores([p for p in predictions if p["dataset"] == g])
                                         for g in groups}}
    if "majority" in baselines:
        done = [p for p in predictions if not p.get("audio_error")]
        attributes = [n for n in names if schema.field(n).kind != "text"]
        majority = {n: majority_label([p["reference"][n] for p in done if _scored(p, n, schema)],
                                      schema.field(n).labels or (True, False)) for n in attributes}

        def scores(rows):
            return {n: classification([p["reference"][n] for p in rows if _scored(p, n, schema)],
                                      [majority[n]] * sum(_scored(p, n, schema) for p in rows),
                                      schema.field(n).labels or (True, False)) for n in attributes}

        out["majority"] = {
            "note": "each attribute's most frequent label among the evaluated clips' references (all datasets "
                    "together), predicted for every clip: the accuracy a constant answer gets on this set",
            "labels": majority, "all": scores(done),
            "groups": {g: scores([p for p in done if p["dataset"] == g]) for g in groups},
        }
    return out


def _cascade_scores(predictions) -> dict:
    rows = [p for p in predictions if "cascade_transcript" in p]
    seconds, busy = sum(p["seconds"] for p in rows), sum(p["cascade_s"] for p in rows)
    references = [p["reference"][TRANSCRIPT_FIELD] for p in rows]
    return {"wer": corpus_wer(references, [p["cascade_transcript"] for p in rows]),
            "audio_s": seconds, "processing_s": busy, "rtf": busy / seconds if seconds else None,
            "clips_per_s": len(rows) / busy if busy else None}
