"""The modality gap: does a speech LLM answer the same about a clip as its LLM answers about the clip's words?

    report = evaluate_gap(speechllm.load("my-model"), "passages/test.jsonl", out_dir="runs/gap")

For every clip of the manifests (rows with `audio` and `transcript`; spoken passages add `questions` and a
reference `summary`, see `data.synth.passages`) the same model is asked the same requests three ways:
- "speech": with the clip (the speech LLM);
- "text": with the reference transcript as text, in a text-only conversation (the oracle the gap is measured to);
- "cascade": with faster-whisper tiny.en's transcript as text (the cascade every user would otherwise build).
Requests: each question, a summary, and (speech only) a transcription of the clip. Scores: the transcription
WER (the model's own, and the cascade's), spoken-QA accuracy (the answer contains the normalised fact),
agreement of the speech and cascade answers with the text answers (exact match and ROUGE-L), and summary
ROUGE-L against the text run's summary and against the reference summary.

`model` is anything with `chat(conversations, max_new_tokens=, batch_size=) -> [str]` (SpeechLLM models do), so
a stub whose answers are known checks the scoring. Decoding is greedy; `prompt_style` words the requests
(see `speechllm.prompt_styles`: plain instructions, or few-shot completions for a base LLM).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from speechllm.audio import SAMPLE_RATE, load_audio
from speechllm.data.manifest import RowParser
from speechllm.errors import AudioError, ConfigError, DataError
from speechllm.inference import check_positive
from speechllm.metadata import SPEECHLLM_SCHEMA
from speechllm.prompt_styles import PromptStyle, resolve_prompt_style
from speechllm.records import BadRow, read_jsonl

from . import cascade as cascade_asr
from .gap_report import write_gap_report
from .metrics import contains_answer, corpus_wer, exact_match, rouge_l

logger = logging.getLogger(__name__)

SYSTEMS = ("speech", "text", "cascade")
MAX_NEW_TOKENS = {"question": 32, "summary": 128}


@dataclass
class GapItem:
    """One clip: where it came from, what is said, its questions ({"question", "answer"}) and reference summary."""

    id: str
    audio: object  # what load_audio takes: a path, or (samples, rate) for a segment
    transcript: str
    questions: list[dict] = field(default_factory=list)
    summary: str | None = None
    group: str = "all"  # "short" / "long" for passages


def read_gap_items(paths, limit: int | None = None) -> tuple[list[GapItem], dict[str, list[dict]]]:
    """Clips with a transcript from JSONL manifests -> (items, skipped rows per manifest as {"line", "reason"}).
    `limit`: the first N usable rows of each manifest. DataError when a manifest is missing."""
    items, skipped = [], {}
    for path in [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]:
        lines = read_jsonl(path)  # DataError when the file is missing
        parser = RowParser(SPEECHLLM_SCHEMA, path.parent, check_audio=True, task=None)
        bad, kept = skipped.setdefault(str(path), []), 0
        for line in lines:
            if limit is not None and kept >= limit:
                break
            try:
                items.append(_item(line.row(), parser, path, line.number))
                kept += 1
            except BadRow as e:
                bad.append({"line": line.number, "reason": e.reason})
    return items, skipped


def _item(row, parser: RowParser, path: Path, number: int) -> GapItem:
    if not isinstance(row, dict):
        raise BadRow(f"a row must be a JSON object, got {type(row).__name__}")
    if not row.get("transcript"):
        raise BadRow("no 'transcript': the text run needs the reference words")
    questions = row.get("questions") or []
    if not isinstance(questions, list) or not all(
            isinstance(q, dict) and isinstance(q.get("question"), str) and isinstance(q.get("answer"), str)
            for q in questions):
        raise BadRow("'questions' must be a list of {\"question\": str, \"answer\": str}")
    summary = row.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise BadRow(f"'summary' must be a string, got {summary!r}"[:200])
    kept = {k: row[k] for k in ("id", "audio", "offset_s", "duration_s", "transcript") if row.get(k) is not None}
    record = parser.parse(kept, f"{path.stem}:{number}", f"{path}:{number}")
    return GapItem(record.id, record.audio_source(), record.transcript, questions, summary,
                   str(row.get("length") or "all"))


def evaluate_gap(model, manifest, *, out_dir, prompt_style: str | dict | PromptStyle | None = None,
                 cascade="auto", batch_size: int = 8, limit: int | None = None, model_name: str | None = None,
                 max_new_tokens: dict[str, int] | None = None) -> dict:
    """Measure the modality gap of `model` on one manifest or a list -> the report dict, also written to `out_dir`
    (report.json, report.md, predictions.jsonl).

    `cascade`: "auto" (faster-whisper tiny.en when installed, decoding with as many beams as the model's
    transcribing encoder, greedy otherwise; else the cascade rows say why not), None (skip it),
    or an object with `transcribe(list of 16 kHz arrays) -> [str]`. `limit`: the first N usable rows of each
    manifest. `max_new_tokens` overrides the answer limits per request ({"question": 32, "summary": 128}).
    Progress (clips done, elapsed, time left) goes to the `speechllm` logger."""
    check_positive("batch_size", batch_size)
    if limit is not None:
        check_positive("limit", limit)
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ConfigError(f"out_dir {out_dir} is a file; the report needs a folder")
    limits = {**MAX_NEW_TOKENS, **(max_new_tokens or {})}
    for name, value in limits.items():
        check_positive(f"max_new_tokens[{name!r}]", value)
    style = resolve_prompt_style(prompt_style, model)
    items, skipped = read_gap_items(manifest, limit)
    if not items:
        raise ConfigError(f"no usable rows in {manifest}: {json.dumps(skipped)[:500]}")
    asr, cascade_note = _cascade(cascade, _transcriber_beams(model))
    predictions, failed, start = [], [], time.perf_counter()
    for first in range(0, len(items), batch_size):
        group, clips = [], []
        for item in items[first:first + batch_size]:
            try:
                clips.append(load_audio(item.audio, name=item.id))
                group.append(item)
            except (AudioError, DataError) as e:
                failed.append({"id": item.id, "error": str(e)})
        if group:
            predictions += _answer_batch(model, style, group, clips, asr, batch_size, limits)
        _log_progress(min(first + batch_size, len(items)), len(items), start)
    report = {"model": model_name or type(model).__name__, "manifests": [str(m) for m in _as_list(manifest)],
              "prompt_style": style.name, "clips": len(items), "failed_clips": failed,
              "skipped_rows": skipped, "cascade": cascade_note,
              "systems": [s for s in SYSTEMS if asr is not None or s != "cascade"],
              "seconds": round(time.perf_counter() - start, 1)}
    report["all"] = score(predictions, report["systems"])
    lengths = sorted({p["group"] for p in predictions} - {"all"})  # short and long passages apart
    report["groups"] = {g: score([p for p in predictions if p["group"] == g], report["systems"])
                        for g in lengths} if len(lengths) > 1 else {}
    write_gap_report(report, predictions, out_dir)
    return report


def _as_list(manifest) -> list:
    return [manifest] if isinstance(manifest, (str, Path)) else list(manifest)


def _cascade(choice, beams: int = 1):
    if choice is None:
        return None, "not run (switched off)"
    if choice != "auto":
        return choice, getattr(choice, "name", type(choice).__name__)
    reason = cascade_asr.unavailable_reason()
    if reason:
        return None, f"not run: {reason}"
    asr = cascade_asr.CascadeASR(beam_size=beams)
    return asr, asr.name


def _transcriber_beams(model) -> int:
    """The beams of a model whose encoder transcribes (gemma-bridge: 5), so the cascade decodes alike; else 1."""
    return int(getattr(getattr(model, "encoder", None), "beams", 1) or 1)


def _answer_batch(model, style: PromptStyle, items: list[GapItem], clips: list, asr, batch_size: int,
                  limits: dict[str, int]) -> list[dict]:
    """Every request about `items` in every system, batched per request kind -> one prediction row per clip."""
    audio = [(clip, SAMPLE_RATE) for clip in clips]
    longest = max(len(item.transcript.split()) for item in items)
    own = _ask(model, style, [style.parts("transcript", a) for a in audio], min(1024, 2 * longest + 16), batch_size)
    passages = {"speech": audio, "text": [item.transcript for item in items]}
    rows = [{"id": item.id, "group": item.group, "transcript": item.transcript,
             "transcripts": {"speech": own[i]}, "requests": []} for i, item in enumerate(items)]
    if asr is not None:
        heard = asr.transcribe(clips)
        passages["cascade"] = heard
        for row, text in zip(rows, heard):
            row["transcripts"]["cascade"] = text
    requests = [(i, "question", q) for i, item in enumerate(items) for q in item.questions]
    requests += [(i, "summary", None) for i in range(len(items))]
    for kind in ("question", "summary"):
        chosen = [(i, q) for i, k, q in requests if k == kind]
        answers = {system: _ask(model, style, [style.parts(kind, passages[system][i], question=q and q["question"])
                                               for i, q in chosen], limits[kind], batch_size)
                   for system in passages}
        for n, (i, q) in enumerate(chosen):
            request = {"request": kind, **({"question": q["question"], "answer": q["answer"]} if q else
                                           {"reference": items[i].summary})}
            rows[i]["requests"].append({**request, **{system: answers[system][n] for system in passages}})
    return rows


def _ask(model, style: PromptStyle, contents: list[list[dict]], max_new_tokens: int, batch_size: int) -> list[str]:
    if not contents:
        return []
    conversations = [[{"role": "user", "content": parts}] for parts in contents]
    tokenizer = getattr(getattr(model, "processor", None), "tokenizer", None)
    options = style.generate_options(tokenizer) if tokenizer is not None else {}
    answers = model.chat(conversations, max_new_tokens=max_new_tokens, batch_size=batch_size, **options)
    return [style.clean(a) for a in answers]


def _log_progress(done: int, total: int, start: float) -> None:
    elapsed = time.perf_counter() - start
    left = elapsed / done * (total - done) if done else float("nan")
    logger.info("modality gap: %d/%d clips, %.0f s elapsed, about %.0f s left", done, total, elapsed, left)


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def score(predictions: list[dict], systems: list[str]) -> dict:
    """Scores of prediction rows (as `evaluate_gap` writes them) per system: transcription WER (speech: the model's
    own, cascade: faster-whisper's), QA accuracy, agreement with the text run (exact match and ROUGE-L of the
    answers, ROUGE-L of the summaries), summary ROUGE-L against the references."""
    questions = [r for p in predictions for r in p["requests"] if r["request"] == "question"]
    summaries = [r for p in predictions for r in p["requests"] if r["request"] == "summary"]
    referenced = [r for r in summaries if r.get("reference")]
    out = {"clips": len(predictions), "questions": len(questions), "summaries": len(summaries)}
    for system in systems:
        heard = [p["transcripts"][system] for p in predictions if system in p["transcripts"]]
        scores = {"wer": corpus_wer([p["transcript"] for p in predictions], heard)["wer"] if heard else None,
                  "qa_accuracy": _mean([contains_answer(r[system], r["answer"]) for r in questions]),
                  "summary_rouge_l_vs_reference": _mean([rouge_l(r[system], r["reference"]) for r in referenced])}
        if system != "text":
            scores.update(qa_exact_match_vs_text=_mean([exact_match(r[system], r["text"]) for r in questions]),
                          qa_rouge_l_vs_text=_mean([rouge_l(r[system], r["text"]) for r in questions]),
                          summary_rouge_l_vs_text=_mean([rouge_l(r[system], r["text"]) for r in summaries]))
        out[system] = scores
    return out
