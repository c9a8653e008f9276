"""`speechllm quickstart`: everything a newcomer runs first, offline, on a laptop CPU.

1. The default model answers about three example clips at once (speech by two voices, and noise).
2. A small synthetic corpus is spoken (espeak-ng and piper voices, labels true by construction).
3. A small model is trained on it from the packaged Whisper tiny.en weights (configs/default.yaml, fewer steps),
   and its attribute heads are fitted (heads.py).
4. Both models are evaluated side by side on held-out synthetic clips and, when present, real recordings.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "default.yaml"
REAL_SPEECH = ROOT.parent / "shared" / "realspeech-dev" / "manifest.jsonl"

EXAMPLES = [
    ("piper:en_US-joe-medium", "The weather will be sunny tomorrow, with a light breeze from the west."),
    ("espeak:en-gb+f3", "Please remember to bring your passport to the airport on Monday."),
]


def say(message: str) -> None:
    print(f"\n== {message}", flush=True)


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
        print(f"{clip.name}: {result.text}\n    confidences {confidences}")


def quickstart(out_dir: str | Path = "runs/quickstart", *, clips: int = 400, steps: int = 40, batch_size: int = 8,
               real: str | Path | None = None, eval_limit: int = 40) -> Path:
    """Run the four steps above; returns the output folder (examples, corpus, model, evaluation reports)."""
    from . import default_model, load
    from .data.synth import build_corpus
    from .evaluation import evaluate
    from .training.config import load_train_config
    from .training.trainer import train

    started = time.time()
    out = Path(out_dir)
    say("1/4 the default model answers about example clips")
    examples = make_examples(out / "examples")
    default = None
    try:
        default = default_model()
        answer(default, examples)
    except ConfigError as error:
        print(f"(skipped: {error})")

    say(f"2/4 speaking a synthetic corpus of {clips} clips")
    corpus = build_corpus(out / "corpus", clips, seed=1)

    say(f"3/4 training a small model: {steps} steps of {batch_size} clips (configs/default.yaml, shortened)")
    config = load_train_config(RECIPE, [
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
    real = Path(real) if real else REAL_SPEECH
    if real.exists():
        manifests.append(real)
    else:
        print(f"(no real recordings at {real}; pass --real MANIFEST to add some)")
    rows = []
    for name, model in [("default", default), ("quickstart", trained)]:
        if model is None:
            continue
        report = evaluate(model, manifests, out_dir=out / "eval" / name, limit=eval_limit, model_name=name,
                          baselines=("majority",) if name == "quickstart" else ("cascade", "majority"))
        rows.append((name, report))
    print_side_by_side(rows)
    say(f"done in {(time.time() - started) / 60:.1f} min; everything is under {out}/")
    print(f"  examples: {out / 'examples'}\n  corpus: {corpus}\n  trained model: {out / 'model' / 'final'}\n"
          f"  reports: {out / 'eval'}/<model>/report.md (and confusion-*.png)")
    return out


def print_side_by_side(rows) -> None:
    fields = ["wer", "Gender", "Accent", "SpeechActivity", "json_valid"]
    print(f"{'model':<12} {'dataset':<28} " + " ".join(f"{f:>14}" for f in fields))
    for name, report in rows:
        for group, summary in report["groups"].items():
            cells = []
            for field in fields:
                value = summary.get(field) if field in ("wer", "json_valid") else summary.get("attributes", {}).get(field)
                if isinstance(value, dict):
                    value = value.get("wer", value.get("accuracy"))
                cells.append(f"{value:>14.3f}" if isinstance(value, (int, float)) else f"{'-':>14}")
            print(f"{name:<12} {group[:28]:<28} " + " ".join(cells))
    for name, report in rows:  # the cascade's WER on the same clips, in the same run
        cascade = report.get("baselines", {}).get("cascade")
        for group, summary in (cascade or {}).get("groups", {}).items():
            print(f"{'cascade':<12} {group[:28]:<28} {summary['wer']['wer']:>14.3f}")
