"""`speechllm quickstart`: everything a newcomer runs first, offline, on a laptop CPU.

1. The default model answers about three example clips at once (speech by two voices, and noise).
   The second shipped model, a speech LLM over Gemma 3 270M (`gemma-bridge`), answers a spoken question and
   summarizes a spoken passage of about two minutes (skipped, saying why, without the `gemma` extra).
2. A small synthetic corpus is spoken (espeak-ng and piper voices, labels true by construction).
3. A small model is trained on it from the packaged Whisper tiny.en weights (the packaged recipe `default`, fewer
   steps), and its attribute heads are fitted (heads.py).
4. Both models are evaluated side by side on held-out synthetic clips and on real recordings when given (`real`).

Everything it says goes through the `speechllm` logger at INFO (the CLI shows it on stderr).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import ConfigError

log = logging.getLogger(__name__)

EXAMPLES = [
    ("piper:en_US-joe-medium", "The weather will be sunny tomorrow, with a light breeze from the west."),
    ("espeak:en-gb+f3", "Please remember to bring your passport to the airport on Monday."),
]


def say(message: str) -> None:
    log.info("\n== %s", message)


def make_examples(folder: Path) -> list[Path]:
    """Two spoken sentences and a clip of noise, written as wav files."""
    from .data.synth import negatives, resolve_voices, synthesize

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index, (voice_id, text) in enumerate(EXAMPLES):
        try:
            voice = resolve_voices([voice_id])[0]
        except ConfigError:
            voice = resolve_voices(["espeak:en-us"])[0]
        path = folder / f"example-{index}-{voice.gender.lower()}-{voice.accent.lower()}.wav"
        sf.write(path, synthesize(voice, text, rng), 16000, subtype="PCM_16")
        paths.append(path)
    path = folder / "example-2-noise.wav"
    sf.write(path, negatives.make_negative("noise", rng, 3.0), 16000, subtype="PCM_16")
    return paths + [path]


def answer(model, clips: list[Path]) -> None:
    for clip, result in zip(clips, model.generate_meta([str(c) for c in clips])):
        confidences = {k: round(v, 2) for k, v in result.confidences.items()}
        log.info("%s: %s\n    confidences %s", clip.name, result.text, confidences)


def spoken_passages(folder: Path) -> list[tuple[Path, object]]:
    """A short passage with questions and a long one (about two minutes) with a summary, spoken by espeak-ng,
    from the test split's values (never in any training passage)."""
    from .data.synth import resolve_voices, synthesize
    from .data.synth.passage_text import make_long_passage, make_passage

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    voice = resolve_voices(["espeak:en-us"])[0]
    spoken = []
    for name, passage in [("passage-short", make_passage("phone message", "test", rng)),
                          ("passage-long", make_long_passage("announcement", "test", rng, (330, 420)))]:
        path = folder / f"{name}.wav"
        sf.write(path, synthesize(voice, passage.text, rng), 16000, subtype="PCM_16")
        spoken.append((path, passage))
    return spoken


def ask_gemma_bridge(folder: Path) -> None:
    """The shipped speech LLM over Gemma answers a question about a spoken passage and summarizes a long one."""
    from . import load
    from .audio import load_audio

    try:
        model = load("gemma-bridge")
    except ConfigError as error:
        log.warning("(gemma-bridge skipped: %s)", error)
        return
    (short, passage), (long, long_passage) = spoken_passages(folder)
    question = passage.questions[0]
    clip = load_audio(str(short))
    # Asked as it was trained: few-shot completions for a base LLM (the model's prompt style).
    answer_ = model.ask((clip, 16000), question["question"], max_new_tokens=16)
    log.info("%s (%.0f s): %s\n    Q: %s\n    A: %s   (expected: %s)", short.name, len(clip) / 16000, passage.text,
             question["question"], answer_, question["answer"])
    clip = load_audio(str(long))
    summary = model.summarize((clip, 16000), max_new_tokens=60)
    log.info("%s (%.0f s) summary: %s\n    reference: %s", long.name, len(clip) / 16000, summary,
             long_passage.summary)


def quickstart(out_dir: str | Path = "runs/quickstart", *, clips: int = 400, steps: int = 40, batch_size: int = 8,
               real: str | Path | None = None, eval_limit: int = 40) -> Path:
    """Run the four steps above; returns the output folder (examples, corpus, model, evaluation reports).

    `real`: a manifest of real recordings to evaluate on beside the synthetic test split (None: synthetic only).
    """
    from . import default_model, load
    from .data.synth import build_corpus
    from .evaluation import evaluate
    from .recipes import recipe_path
    from .training.config import load_train_config
    from .training.trainer import train

    started = time.time()
    out = Path(out_dir)
    real = Path(real) if real else None
    if real is not None and not real.is_file():
        raise ConfigError(f"--real {real}: no such manifest file")  # before minutes of work
    say("1/4 the default model answers about example clips")
    examples = make_examples(out / "examples")
    default = None
    try:
        default = default_model()
        answer(default, examples)
    except ConfigError as error:
        log.warning("(skipped: %s)", error)
    ask_gemma_bridge(out / "examples")

    say(f"2/4 speaking a synthetic corpus of {clips} clips")
    corpus = build_corpus(out / "corpus", clips, seed=1)

    say(f"3/4 training a small model: {steps} steps of {batch_size} clips (recipe `default`, shortened)")
    config = load_train_config(recipe_path("default"), [
        f"data.sources.0.manifest={corpus / 'train.jsonl'}", f"data.sources.1.manifest={corpus / 'train.jsonl'}",
        f"eval_data.sources.0.manifest={corpus / 'dev.jsonl'}", f"output_dir={out / 'model'}",
        f"stages.0.steps={steps}", f"stages.0.batch_size={batch_size}", f"stages.0.warmup_steps={max(steps // 10, 1)}",
        "save_every=0", "report_to=[]", "eval_samples=1",
        # the recipe's heads, Accent from the voice embedding: encoder_layers needs one more encoder pass over the
        # corpus, minutes that would push the quick start toward its 10-minute limit
        "heads={SpeechActivity: [vad, pitch], Gender: [voice], Accent: [voice]}",
    ])
    trained = load(train(config))
    answer(trained, examples)

    say("4/4 evaluating both models side by side")
    manifests = [corpus / "test.jsonl"]
    if real is not None:
        manifests.append(real)
    else:
        log.info("(synthetic clips only; pass --real MANIFEST to add real recordings)")
    rows = []
    for name, model in [("default", default), ("quickstart", trained)]:
        if model is None:
            continue
        report = evaluate(model, manifests, out_dir=out / "eval" / name, limit=eval_limit, model_name=name,
                          baselines=("majority",) if name == "quickstart" else ("cascade", "majority"))
        rows.append((name, report))
    log.info("%s", side_by_side(rows))
    say(f"done in {(time.time() - started) / 60:.1f} min; everything is under {out}/")
    log.info("  examples: %s\n  corpus: %s\n  trained model: %s\n  reports: %s/<model>/report.md (and "
             "confusion-*.png)", out / "examples", corpus, out / "model" / "final", out / "eval")
    return out


def side_by_side(rows) -> str:
    """The models' scores on each dataset as a text table, with the cascade's WER on the same clips below."""
    fields = ["wer", "Gender", "Accent", "SpeechActivity", "json_valid"]
    lines = [f"{'model':<12} {'dataset':<28} " + " ".join(f"{f:>14}" for f in fields)]
    for name, report in rows:
        for group, summary in report["groups"].items():
            cells = []
            for field in fields:
                scores = summary if field in ("wer", "json_valid") else summary.get("attributes", {})
                value = scores.get(field)
                if isinstance(value, dict):
                    value = value.get("wer", value.get("accuracy"))
                cells.append(f"{value:>14.3f}" if isinstance(value, (int, float)) else f"{'-':>14}")
            lines.append(f"{name:<12} {group[:28]:<28} " + " ".join(cells))
    for name, report in rows:  # the cascade's WER on the same clips, in the same run
        cascade = report.get("baselines", {}).get("cascade")
        for group, summary in (cascade or {}).get("groups", {}).items():
            lines.append(f"{'cascade':<12} {group[:28]:<28} {summary['wer']['wer']:>14.3f}")
    return "\n".join(lines)
