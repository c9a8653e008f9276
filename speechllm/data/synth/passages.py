"""Build spoken passages for question answering and summaries: wavs, train/dev/test manifests, task rows.

    build_passages("data/passages", 600, long_count=60, voices=["espeak:en-us", "piper:"])

Short passages (phone messages, announcements, news, instructions, stories, reminders; see `passage_kinds`)
come with 2-4 questions whose answers are spans of the transcript; long ones (one to three minutes, several
paragraphs) with more questions and a summary built from their key facts. Test passages state names, cities,
times, prices, rooms and dates that no training passage states (`passage_values`).

Like the sentence corpus, everything is planned up front from the seed and each clip is rendered from its own
generator `[seed, index]`, so the files do not depend on the number of workers or on an interrupted build.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from speechllm.data.synth.augment import AugmentConfig, apply_augmentation, draw_augmentation
from speechllm.data.synth.corpus import _claim, _write_text, pick_from, render_missing, sample_voice
from speechllm.data.synth.passage_kinds import KINDS
from speechllm.data.synth.passage_text import make_long_passage, make_passage
from speechllm.data.synth.sentences import SPLITS, check_fractions
from speechllm.data.synth.voices import SAMPLE_RATE, Voice, resolve_voices, synthesize
from speechllm.errors import ConfigError

SECONDS = {"short": (1.0, 45.0), "long": (60.0, 180.0)}  # clips outside are dropped and counted
_FORMAT = "passages-1"


def plan_passages(count: int, long_count: int, voices: list[Voice], *, seed: int, augment: AugmentConfig,
                  splits: tuple[float, float, float]) -> list[dict]:
    """Every clip of the set, in index order: split, kind, passage text and questions, voice, augmentation."""
    rng = np.random.default_rng([seed, 11])
    kinds = sorted(KINDS)
    tasks = []
    for index in range(count + long_count):
        length = "short" if index < count else "long"
        split = SPLITS[int(rng.choice(3, p=splits))]
        kind = pick_from(kinds, rng)
        make = make_passage if length == "short" else make_long_passage
        passage = make(kind, split, np.random.default_rng([seed, 12, index]))
        voice = sample_voice(voices, rng)
        tasks.append({"index": index, "split": split, "audio": f"wavs/{index // 1000:04d}/{index:07d}.wav",
                      "passage": passage, "voice_obj": voice, "augment": draw_augmentation(rng, augment)})
    return tasks


def render_passage(task: dict, seed: int, out_dir: str) -> tuple[int, float | None, str]:
    """Speak, augment and write one planned passage: (index, seconds or None, why it was dropped)."""
    rng = np.random.default_rng([seed, 13, task["index"]])
    passage = task["passage"]
    audio = synthesize(task["voice_obj"], passage.text, rng)
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak == 0:
        return task["index"], None, "silent synthesis"
    audio = apply_augmentation(audio * (0.9 / peak), task["augment"], rng)
    seconds = len(audio) / SAMPLE_RATE
    low, high = SECONDS[passage.length]
    if not low <= seconds <= high:
        return task["index"], None, f"{passage.length} passage {'too short' if seconds < low else 'too long'}"
    path = Path(out_dir) / task["audio"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # renamed when whole: a resumed build trusts it
    sf.write(tmp, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return task["index"], round(sf.info(path).frames / SAMPLE_RATE, 3), ""


def _render_star(args):
    return render_passage(*args)


def build_passages(out_dir: str | os.PathLike, count: int, *, long_count: int = 0, seed: int = 0, workers: int = 2,
                   voices: list[Voice | str] | None = None, augment_prob: float = 0.0,
                   splits: tuple[float, float, float] = (0.8, 0.1, 0.1), progress: bool = True) -> Path:
    """Write `count` short and `long_count` long spoken passages to `out_dir`; returns its path.

    Files: wavs/, `{train,dev,test}.jsonl` (one passage a row: id, audio, duration_s, transcript, questions
    [{"question", "answer"}], summary, kind, length, speech_activity, gender, accent, voice, split),
    `{split}-tasks.jsonl` (the same clips as training rows: one `spoken_qa` row per question with the question as
    instruction and the answer as response, one `summarization` row), `summary.json` and `build.json`.
    `voices`: ids or prefixes as for `build_corpus` (None: every voice found). The same arguments give the same
    files; a partly built folder is completed, one built with other settings refused. Clips outside 1-45 s
    (short) or 60-180 s (long) are dropped and counted in the summary.
    """
    if int(count) < 0 or int(long_count) < 0 or int(count) + int(long_count) < 1:
        raise ConfigError(f"need at least one passage, got count={count}, long_count={long_count}")
    if int(workers) < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    splits = check_fractions(splits)
    augment = AugmentConfig(prob=float(augment_prob), speed=(0.95, 1.05))  # keeps long passages inside 1-3 min
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; the passages need a folder (new or built before with the same settings)")
    chosen = resolve_voices(voices)
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, {"format": _FORMAT, "count": int(count), "long_count": int(long_count), "seed": int(seed),
                 "voices": sorted(v.id for v in chosen), "augment_prob": float(augment_prob), "splits": list(splits)})

    tasks = plan_passages(int(count), int(long_count), chosen, seed=int(seed), augment=augment, splits=splits)
    durations, skipped = render_missing(tasks, out, int(seed), _render_star, workers=workers,
                                        desc="speaking passages", progress=progress, chunksize=2)

    rows = {split: [passage_row(t, durations[t["index"]]) for t in tasks if t["split"] == split
                    and t["index"] in durations] for split in SPLITS}
    for split, split_rows in rows.items():
        _write_jsonl(out / f"{split}.jsonl", split_rows)
        _write_jsonl(out / f"{split}-tasks.jsonl", [r for row in split_rows for r in task_rows(row)])
    _write_text(out / "summary.json", json.dumps(_summary(tasks, rows, skipped), indent=2) + "\n")
    return out


def passage_row(task: dict, seconds: float) -> dict:
    """The manifest row of a rendered passage."""
    passage, voice = task["passage"], task["voice_obj"]
    return {"id": f"passage-{task['index']:07d}", "audio": task["audio"], "duration_s": seconds,
            "transcript": passage.text, "questions": passage.questions, "summary": passage.summary,
            "kind": passage.kind, "length": passage.length, "speech_activity": True, "gender": voice.gender,
            "accent": voice.accent, "voice": voice.id, "split": task["split"]}


def task_rows(row: dict) -> list[dict]:
    """Training rows of one passage row: a `spoken_qa` row per question (instruction = the question, response =
    the answer) and a `summarization` row (response = the reference summary), each with the clip's transcript."""
    shared = {k: row[k] for k in ("audio", "duration_s", "transcript", "gender", "accent", "voice", "split")}
    rows = [{"id": f"{row['id']}:q{i}", **shared, "instruction": q["question"], "response": q["answer"],
             "task": "spoken_qa"} for i, q in enumerate(row["questions"])]
    rows.append({"id": f"{row['id']}:summary", **shared, "response": row["summary"], "task": "summarization"})
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    _write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _summary(tasks: list[dict], rows: dict[str, list[dict]], skipped: Counter) -> dict:
    written = [r for split in SPLITS for r in rows[split]]
    seconds = {length: [r["duration_s"] for r in written if r["length"] == length] for length in SECONDS}
    return {
        "passages": len(written), "planned": len(tasks), "skipped": dict(sorted(skipped.items())),
        "hours": round(sum(r["duration_s"] for r in written) / 3600, 3),
        "splits": {s: {"passages": len(rows[s]), "questions": sum(len(r["questions"]) for r in rows[s])}
                   for s in SPLITS},
        "kinds": dict(sorted(Counter(f"{r['length']} {r['kind']}" for r in written).items())),
        "duration_s": {length: {"min": min(v, default=0), "max": max(v, default=0),
                                "mean": round(float(np.mean(v)), 2) if v else 0} for length, v in seconds.items()},
        "voices_used": len({r["voice"] for r in written}),
        "gender": dict(sorted(Counter(r["gender"] for r in written).items())),
        "accent": dict(sorted(Counter(r["accent"] for r in written).items())),
    }
