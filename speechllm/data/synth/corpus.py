"""Build a synthetic speech corpus: wav files, train/dev/test JSONL manifests and a summary.

The whole corpus is planned up front in one process from the seed (which clips are speech or not, split,
sentence, voice, augmentation), and each clip is rendered from its own generator `[seed, index]`; so the
files do not depend on the number of workers, their order, or on a build that was interrupted and resumed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speechllm.data.synth.augment import AugmentConfig, apply_augmentation, draw_augmentation
from speechllm.data.synth.negatives import NEGATIVES, make_negative
from speechllm.data.synth.sentences import SPLITS, SentencePool, check_fractions
from speechllm.data.synth.voices import SAMPLE_RATE, Voice, resolve_voices, synthesize
from speechllm.errors import ConfigError

MIN_SECONDS, MAX_SECONDS = 0.3, 20.0
NEGATIVE_SECONDS = (0.5, 8.0)
_FORMAT_VERSION = 1


def sample_voice(voices: list[Voice], rng: np.random.Generator) -> Voice:
    """Draw a voice so labels are balanced: a gender uniformly, then an accent that gender has, then a
    backend within that cell (so the one natural piper voice is not drowned by 16 espeak variants), then a
    voice."""
    def pick(options):
        options = sorted(set(options))
        return options[int(rng.integers(len(options)))]

    gender = pick(v.gender for v in voices)
    accent = pick(v.accent for v in voices if v.gender == gender)
    cell = [v for v in voices if v.gender == gender and v.accent == accent]
    backend = pick(v.backend for v in cell)
    return pick_from([v for v in cell if v.backend == backend], rng)


def pick_from(items: list, rng: np.random.Generator):
    """One item of a list, drawn from `rng`."""
    return items[int(rng.integers(len(items)))]


def plan_corpus(num_utterances: int, voices: list[Voice], *, seed: int, negatives_fraction: float,
                augment: AugmentConfig, splits: tuple[float, float, float]) -> tuple[list[dict], SentencePool]:
    """Decide every clip of the corpus: a list of task dicts in index order, and the sentence pool used."""
    rng = np.random.default_rng([seed, 1])
    negatives = set(rng.permutation(num_utterances)[: int(round(num_utterances * negatives_fraction))].tolist())
    pool = SentencePool(splits, grammar_count=max(1, num_utterances - len(negatives)), seed=seed)
    tasks = []
    for index in range(num_utterances):
        split = SPLITS[int(rng.choice(3, p=splits))]
        task = {"index": index, "split": split, "audio": f"wavs/{index // 1000:04d}/{index:07d}.wav"}
        if index in negatives:
            kind = pick_from(sorted(NEGATIVES), rng)
            task.update(kind="negative", negative=kind, seconds=float(rng.uniform(*NEGATIVE_SECONDS)),
                        voice=f"negative:{kind}", transcript=None, gender=None, accent=None)
        else:
            voice = sample_voice(voices, rng)
            text, source = pool.draw(split, rng)
            task.update(kind="speech", voice_obj=voice, voice=voice.id, transcript=text, source=source,
                        gender=voice.gender, accent=voice.accent)
        task["augment"] = draw_augmentation(rng, augment)
        tasks.append(task)
    return tasks, pool


def render(task: dict, seed: int, out_dir: str) -> tuple[int, float | None, str]:
    """Synthesize, augment and write one planned clip; (index, duration in seconds or None, why skipped)."""
    rng = np.random.default_rng([seed, 2, task["index"]])
    if task["kind"] == "negative":
        audio = make_negative(task["negative"], rng, task["seconds"])
    else:
        audio = synthesize(task["voice_obj"], task["transcript"], rng)
        peak = float(np.abs(audio).max()) if len(audio) else 0.0
        if peak == 0:
            return task["index"], None, "silent synthesis"
        audio = audio * (0.9 / peak)  # engines differ in level; the gain augmentation varies it
    audio = apply_augmentation(audio, task["augment"], rng)
    seconds = len(audio) / SAMPLE_RATE
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        return task["index"], None, "too short" if seconds < MIN_SECONDS else "too long"
    path = Path(out_dir) / task["audio"]
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write under a temporary name and rename, so an interrupted build never leaves a partial wav that a
    # resumed build would take for finished.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    sf.write(tmp, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return task["index"], round(sf.info(path).frames / SAMPLE_RATE, 3), ""


def _render_star(args):
    return render(*args)


def build_corpus(out_dir: str | os.PathLike, num_utterances: int, *, seed: int = 0, workers: int = 2,
                 voices: list[Voice | str] | None = None, negatives_fraction: float = 0.05,
                 augment_prob: float = 0.5, splits: tuple[float, float, float] = (0.9, 0.05, 0.05),
                 progress: bool = True) -> Path:
    """Write a synthetic corpus to `out_dir` and return its path.

    Produces 16 kHz mono 16-bit wavs under wavs/, `train.jsonl`, `dev.jsonl` and `test.jsonl` (one object a
    line: audio (relative path), duration_s, transcript (None for non-speech), speech_activity, gender,
    accent, voice, split), `summary.json` (balance and voices) and `build.json` (the settings).

    `voices`: Voice objects, ids or id prefixes ("espeak:en-gb", "piper:"); None takes every voice found.
    The same arguments give the same files. Re-running on a partly built directory only renders the
    missing clips; a directory built with other settings is refused. Clips outside 0.3-20 s are dropped,
    so a manifest can hold slightly fewer than `num_utterances` rows (the summary counts them).
    """
    if int(num_utterances) < 1:
        raise ConfigError(f"num_utterances must be at least 1, got {num_utterances}")
    if not 0 <= negatives_fraction <= 1:
        raise ConfigError(f"negatives_fraction must be between 0 and 1, got {negatives_fraction}")
    if int(workers) < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    splits = check_fractions(splits)
    augment = AugmentConfig(prob=float(augment_prob))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; the corpus needs a folder (new or built before with the same settings)")
    chosen = resolve_voices(voices) if negatives_fraction < 1 else []
    out.mkdir(parents=True, exist_ok=True)
    settings = {"format": _FORMAT_VERSION, "num_utterances": int(num_utterances), "seed": int(seed),
                "voices": sorted(v.id for v in chosen), "negatives_fraction": float(negatives_fraction),
                "augment_prob": float(augment_prob), "splits": list(splits)}
    _claim(out, settings)

    tasks, pool = plan_corpus(int(num_utterances), chosen, seed=int(seed), negatives_fraction=negatives_fraction,
                              augment=augment, splits=splits)
    durations, skipped = render_missing(tasks, out, int(seed), _render_star, workers=workers, desc="synthesizing",
                                        progress=progress, chunksize=4)

    rows = {split: [] for split in SPLITS}
    for task in tasks:
        if task["index"] in durations:
            rows[task["split"]].append(_row(task, durations[task["index"]]))
    for split, split_rows in rows.items():
        _write_text(out / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows))
    summary = summarize(tasks, rows, skipped, chosen, pool)
    _write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return out


def render_missing(tasks: list[dict], out: Path, seed: int, render, *, workers: int, desc: str, progress: bool,
                   chunksize: int) -> tuple[dict[int, float], Counter]:
    """Render every planned clip whose file is not there yet with `render((task, seed, out))` -> (index, seconds or
    None, why skipped), in `workers` processes -> (seconds per index, skip reasons). Clips already written (an
    interrupted build) are only measured, so a resumed build gives the same files."""
    durations: dict[int, float] = {}
    skipped: Counter = Counter()
    jobs = []
    for task in tasks:
        path = out / task["audio"]
        if path.exists():
            durations[task["index"]] = round(sf.info(path).frames / SAMPLE_RATE, 3)
        else:
            jobs.append((task, seed, str(out)))

    def collect(results, bar):
        for index, seconds, why in results:
            if seconds is None:
                skipped[why] += 1
            else:
                durations[index] = seconds
            bar.update(1)

    with tqdm(total=len(tasks), initial=len(tasks) - len(jobs), desc=desc, unit="clip", disable=not progress) as bar:
        if workers == 1 or len(jobs) <= 1:
            collect(map(render, jobs), bar)
        else:
            # fork where the platform has it: a spawned worker would re-import `speechllm`, which pulls in
            # torch and transformers (~10 s each). Workers use no torch, so its thread pools do not matter;
            # piper sessions run on one thread and load lazily inside each worker.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with context.Pool(int(workers)) as pool:
                collect(pool.imap_unordered(render, jobs, chunksize=chunksize), bar)
    return durations, skipped


def _row(task: dict, seconds: float) -> dict:
    return {"audio": task["audio"], "duration_s": seconds, "transcript": task["transcript"],
            "speech_activity": task["kind"] == "speech", "gender": task["gender"], "accent": task["accent"],
            "voice": task["voice"], "split": task["split"]}


def _claim(out: Path, settings: dict) -> None:
    # A resumed build must use the same plan, or old and new clips would be mixed under the same names.
    marker = out / "build.json"
    if marker.exists():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise ConfigError(f"{out} holds a corpus built with other settings ({', '.join(changed)} differ); "
                              "use a new directory, or delete this one to rebuild")
    else:
        _write_text(marker, json.dumps(settings, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def summarize(tasks: list[dict], rows: dict[str, list[dict]], skipped: Counter, voices: list[Voice],
              pool: SentencePool) -> dict:
    """Balance of the written corpus: counts and hours by split, label and voice, and what was dropped."""
    written = [r for split in SPLITS for r in rows[split]]
    by_index = {t["audio"]: t for t in tasks}
    speech = [r for r in written if r["speech_activity"]]

    def count(key, items):
        return dict(sorted(Counter(str(key(r)) for r in items).items()))

    seconds = [r["duration_s"] for r in written]
    return {
        "utterances": len(written),
        "planned": len(tasks),
        "skipped": dict(sorted(skipped.items())),
        "hours": round(sum(seconds) / 3600, 3),
        "duration_s": {"min": min(seconds, default=0), "mean": round(float(np.mean(seconds)), 3) if seconds else 0,
                       "max": max(seconds, default=0)},
        "splits": {s: {"utterances": len(rows[s]), "hours": round(sum(r["duration_s"] for r in rows[s]) / 3600, 3),
                       "distinct_transcripts": len({r["transcript"] for r in rows[s] if r["transcript"]})}
                   for s in SPLITS},
        "speech_activity": count(lambda r: r["speech_activity"], written),
        "gender": count(lambda r: r["gender"], speech),
        "accent": count(lambda r: r["accent"], speech),
        "gender_accent": count(lambda r: f"{r['gender']}/{r['accent']}", speech),
        "backend": count(lambda r: r["voice"].split(":")[0], written),
        "sentence_source": count(lambda r: by_index[r["audio"]].get("source"), speech),
        "negatives": count(lambda r: r["voice"].split(":")[1], [r for r in written if not r["speech_activity"]]),
        "augmentation": count(lambda r: "+".join(by_index[r["audio"]]["augment"]) or "none", written),
        "voices_used": len({r["voice"] for r in speech}),
        "voices_available": {f"{b}/{g}/{a}": n for (b, g, a), n in
                             sorted(Counter((v.backend, v.gender, v.accent) for v in voices).items())},
        "sentence_pool": pool.sizes(),
    }

