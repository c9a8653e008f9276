"""Evaluation: real batched decoding scored against references and baselines, and reports.

    from speechllm.evaluation import evaluate
    report = evaluate(speechllm.load("my-model"), "dev.jsonl", out_dir="runs/eval")

Modules: `runner` (evaluate), `data` (tolerant evaluation manifests), `labels` (raw corpus labels -> schema
labels), `metrics` (corpus WER, accuracy, macro-F1, confusion, majority class), `cascade` (faster-whisper
baseline), `report` (report.json / report.md / PNGs), `modality_gap` (the same requests with the clip, its
transcript and a cascade transcript; `speechllm eval-gap`), `gap_report` (its report). What `speechllm infer`
runs is `speechllm.inference.batch`.
"""

from .labels import RAW_LABELS, map_label
from .metrics import classification, corpus_wer, majority_label, normalize_text
from .runner import evaluate

__all__ = ["evaluate", "corpus_wer", "classification", "majority_label", "normalize_text", "map_label", "RAW_LABELS"]
