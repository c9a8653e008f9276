"""fp32 against the LLM in bf16 (what auto precision picks on a CPU with native bf16 for a model without
`llm.cpu_precision: fp32`, models/precision.py), side by side in one run: tokens/s, their ratio, and how often the
answers agree; then whether batching changes gemma-bridge's tokens in either precision.

    python bench/precision.py [--clips 6] [--models gemma-bridge,default] [--threads 1]

gemma-bridge: a few-shot question and a few-shot summary (PROMPT_STYLES["few-shot"], worded as `speechllm eval-gap`
words them) about each of the first --clips spoken passages of runs/passages/dev.jsonl; tokens/s of greedy decoding
end to end (Whisper transcribes on the first request about a clip; later ones reuse its transcript in both runs),
the share of identical answers and the mean ROUGE-L between the fp32 and the auto answers. default: metadata
(generate_meta) of the same clips, the share of clips with identical labels and transcripts.

Batching: 8 clips of mixed lengths (cut from the passages, one joined past 30 s), the same few-shot question batched
and one at a time (Whisper's transcript cache emptied, so every run decodes the audio), in fp32 and in auto.
The packaged models keep fp32 on CPUs (llm.cpu_precision) because of what this script measured; it puts their LLM in
bf16 itself to measure it again. Timings are only meaningful on a CPU with native bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import speechllm  # noqa: E402
from speechllm.audio import SAMPLE_RATE, load_audio, load_conversation_audio  # noqa: E402
from speechllm.evaluation.metrics import rouge_l  # noqa: E402
from speechllm.pretrained.precision import cpu_has_native_bf16  # noqa: E402
from speechllm.prompt_styles import PROMPT_STYLES  # noqa: E402

PASSAGES = Path(__file__).resolve().parents[1] / "runs" / "passages" / "dev.jsonl"
STYLE = PROMPT_STYLES["few-shot"]
LIMITS = {"question": 32, "summary": 128}  # evaluation/modality_gap.py's answer limits


def passages(path: Path, count: int) -> list[tuple[dict, np.ndarray]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:count]
    return [(row, load_audio(path.parent / row["audio"])) for row in rows]


def conversation(kind: str, clip: np.ndarray, question: str | None = None) -> list[dict]:
    return [{"role": "user", "content": STYLE.parts(kind, (clip, SAMPLE_RATE), question=question)}]


def ask(model, conversations, max_new_tokens: int, batch_size: int) -> tuple[list[list[int]], float]:
    """Greedy answers in batches -> (each answer's tokens up to its end, seconds)."""
    options = {"do_sample": False, "max_new_tokens": max_new_tokens,
               **STYLE.generate_options(model.processor.tokenizer)}
    stops = set(model.processor.end_of_turn_ids) | {model.processor.tokenizer.pad_token_id}
    answers, seconds = [], 0.0
    for start in range(0, len(conversations), batch_size):
        batch = model.processor(load_conversation_audio(conversations[start:start + batch_size]))
        began = time.perf_counter()
        tokens = model.generate(**batch, **options)
        seconds += time.perf_counter() - began
        for row in tokens.tolist():
            end = next((i for i, t in enumerate(row) if t in stops), len(row))
            answers.append(row[:end])
    return answers, seconds


def text(model, tokens: list[int]) -> str:
    return STYLE.clean(model.processor.decode([tokens])[0].strip())


def compare_bridge(models: dict, clips, batch_size: int) -> None:
    requests = {"question": [conversation("question", a, r["questions"][0]["question"]) for r, a in clips],
                "summary": [conversation("summary", a) for _, a in clips]}
    for kind, conversations in requests.items():
        runs = {name: ask(model, conversations, LIMITS[kind], batch_size) for name, model in models.items()}
        speed = {name: sum(map(len, tokens)) / seconds for name, (tokens, seconds) in runs.items()}
        answers = {name: [text(models[name], t) for t in tokens] for name, (tokens, _) in runs.items()}
        same = np.mean([a == b for a, b in zip(answers["fp32"], answers["auto"])])
        rouge = np.mean([rouge_l(b, a) for a, b in zip(answers["fp32"], answers["auto"])])
        print(f"gemma-bridge {kind:8s}: fp32 {speed['fp32']:6.1f} tok/s, auto {speed['auto']:6.1f} tok/s, "
              f"ratio {speed['auto'] / speed['fp32']:.2f}; identical answers {same:.2f}, mean ROUGE-L {rouge:.3f}")
        for a, b in zip(answers["fp32"], answers["auto"]):
            if a != b:
                print(f"    fp32: {a!r}\n    auto: {b!r}")


def compare_default(models: dict, clips, batch_size: int) -> None:
    audio = [(a, SAMPLE_RATE) for _, a in clips]
    results, seconds = {}, {}
    for name, model in models.items():
        began = time.perf_counter()
        results[name] = model.generate_meta(audio, batch_size=batch_size)
        seconds[name] = time.perf_counter() - began
    pairs = list(zip(results["fp32"], results["auto"]))
    labels = {name: [{k: v for k, v in r.values.items() if k != "Transcript"} for r in results[name]]
              for name in results}
    same_labels = np.mean([a == b for a, b in zip(labels["fp32"], labels["auto"])])
    same_text = np.mean([a.values.get("Transcript") == b.values.get("Transcript") for a, b in pairs])
    drift = max(abs(a.confidences[k] - b.confidences.get(k, 0.0)) for a, b in pairs for k in a.confidences)
    print(f"default metadata: fp32 {seconds['fp32']:.1f} s, auto {seconds['auto']:.1f} s, "
          f"speed ratio {seconds['fp32'] / seconds['auto']:.2f}; identical labels {same_labels:.2f}, "
          f"identical transcripts {same_text:.2f}, largest confidence change {drift:.3f}")
    for a, b in pairs:
        if a.values != b.values:
            print(f"    fp32: {a.values}\n    auto: {b.values}")


def mixed_clips(clips) -> list[np.ndarray]:
    """8 clips of mixed lengths from the passages: cuts of 3-20 s and one over 30 s (two passages joined)."""
    waves = [a for _, a in clips] * 8
    seconds = [3.0, 20.0, 6.5, None, 1.5, 12.0, 9.0]
    out = [w if s is None else w[: int(s * SAMPLE_RATE)] for w, s in zip(waves, seconds)]
    return out[:3] + [np.concatenate([waves[0], waves[1]])] + out[3:]


def batch_equality(models: dict, clips) -> None:
    waves = mixed_clips(clips)
    question = clips[0][0]["questions"][0]["question"]
    conversations = [conversation("question", w, question) for w in waves]
    for name, model in models.items():
        model.encoder._recent.clear()
        together, _ = ask(model, conversations, LIMITS["question"], len(conversations))
        alone = []
        for c in conversations:
            model.encoder._recent.clear()
            alone += ask(model, [c], LIMITS["question"], 1)[0]
        same = [a == b for a, b in zip(together, alone)]
        lengths = ", ".join(f"{len(w) / SAMPLE_RATE:.1f}" for w in waves)
        print(f"gemma-bridge {name}: batch of 8 ({lengths} s) gives the same tokens as one at a time for "
              f"{sum(same)}/8 clips")
        for wave, a, b, ok in zip(waves, together, alone, same):
            if not ok:
                first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                print(f"    {len(wave) / SAMPLE_RATE:.1f} s: differ from token {first}: batched "
                      f"{text(models[name], a)!r}, alone {text(models[name], b)!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--models", default="gemma-bridge,default")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passages", type=Path, default=PASSAGES)
    parser.add_argument("--no-batching", action="store_true", help="skip the batched-vs-alone check")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU with native bf16: {cpu_has_native_bf16()}; {args.threads} thread(s); {args.clips} clips of "
          f"{args.passages}")
    clips = passages(args.passages, args.clips)
    for name in args.models.split(","):
        models = {"fp32": speechllm.load(name, device="cpu", dtype=torch.float32),
                  "auto": speechllm.load(name, device="cpu", dtype=torch.float32)}
        models["auto"].language_model.to(torch.bfloat16)  # the per-part choice, whatever llm.cpu_precision says
        for label, model in models.items():
            kinds = {part: str(next(m.parameters()).dtype).removeprefix("torch.")
                     for part, m in [("encoder", model.encoder), ("llm", model.language_model)]}
            print(f"{name} {label}: {kinds}")
        if name == "default":
            compare_default(models, clips, args.batch_size)
        else:
            compare_bridge(models, clips, args.batch_size)
            if not args.no_batching:
                batch_equality(models, clips)


if __name__ == "__main__":
    main()
