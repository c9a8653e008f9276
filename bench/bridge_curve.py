"""The gemma-bridge learning curve: spoken-QA accuracy and summary ROUGE-L against the text-prompted summary, for
the shipped model with the connector weights of each checkpoint given (`untrained`: temperature 1, zero residual).

    python bench/bridge_curve.py untrained runs/gemma-bridge/checkpoint-0-0000060 speechllm/resources/gemma_bridge \
        [--manifest runs/passages/dev.jsonl] [--clips 10]

A checkpoint is a folder holding model.safetensors (a training checkpoint) or trainable.safetensors (a final
model). Requests are the model's few-shot ones, greedy; the text run's summaries are computed once per run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import speechllm  # noqa: E402
from speechllm.audio import SAMPLE_RATE, load_audio  # noqa: E402
from speechllm.evaluation.metrics import contains_answer, rouge_l  # noqa: E402
from speechllm.prompt_styles import PROMPT_STYLES  # noqa: E402


def connector_weights(checkpoint: Path, initial: dict) -> dict:
    if str(checkpoint) == "untrained":
        return {k: torch.zeros_like(v) if k.startswith("residual.3") or k == "log_temperature" else v
                for k, v in initial.items()}
    name = "model.safetensors" if (checkpoint / "model.safetensors").exists() else "trainable.safetensors"
    return {k.removeprefix("connector."): v for k, v in load_file(checkpoint / name).items()
            if k.startswith("connector.")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--manifest", type=Path, default=Path("runs/passages/dev.jsonl"))
    parser.add_argument("--clips", type=int, default=10)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()][: args.clips]
    model = speechllm.load("gemma-bridge")
    style = PROMPT_STYLES["few-shot"]  # the model's own style
    stop = style.generate_options(model.processor.tokenizer)

    def ask(request: str, passages: list, questions: list, limit: int) -> list[str]:
        conversations = [[{"role": "user", "content": style.parts(request, p, question=q)}]
                         for p, q in zip(passages, questions)]
        return [style.clean(a) for a in model.chat(conversations, max_new_tokens=limit, batch_size=8, **stop)]

    clips = {r["id"]: (load_audio(str(args.manifest.parent / r["audio"])), SAMPLE_RATE) for r in rows}
    text_summaries = ask("summary", [r["transcript"] for r in rows], [None] * len(rows), 128)
    initial = {k: v.clone() for k, v in model.connector.state_dict().items()}
    questions = [(r["id"], q) for r in rows for q in r.get("questions", [])]
    for checkpoint in args.checkpoints:
        started = time.time()
        model.connector.load_state_dict(connector_weights(checkpoint, initial), strict=False)
        answers = ask("question", [clips[i] for i, _ in questions], [q["question"] for _, q in questions], 24)
        right = sum(contains_answer(a, q["answer"]) for a, (_, q) in zip(answers, questions))
        summaries = ask("summary", [clips[r["id"]] for r in rows], [None] * len(rows), 128)
        agreement = sum(rouge_l(s, t) for s, t in zip(summaries, text_summaries)) / len(rows)
        print(f"{checkpoint}: QA {right}/{len(questions)}, summary ROUGE-L vs text {agreement:.3f} "
              f"({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
