"""Do the confidences mean what they say? Expected calibration error, a reliability table (and plot), and
accuracy against coverage, per label field, from an evaluation's predictions.

A field's answers are scored where the reference has a label (and, for a speaker field, where the reference has
speech) and the model answered a value: (its confidence, whether it was right) pairs.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from speechllm.metadata import SPEECH_FIELD, MetadataSchema

BINS = 10  # equal-width confidence bins of the reliability table and the ECE
COVERAGE_THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)  # min_confidence values of the accuracy-coverage table


def scored_pairs(predictions: Sequence[dict], name: str, schema: MetadataSchema) -> list[tuple[float, bool]]:
    """(confidence, right) of field `name` over predictions that can be scored for it."""
    speaker = schema.field(name).speaker
    pairs = []
    for p in predictions:
        reference, prediction = p.get("reference", {}), p.get("prediction") or {}
        if p.get("audio_error") or name not in reference or prediction.get(name) is None:
            continue
        if speaker and reference.get(SPEECH_FIELD) is False:
            continue
        confidence = (p.get("confidences") or {}).get(name)
        if confidence is not None:
            pairs.append((float(confidence), prediction[name] == reference[name]))
    return pairs


def reliability(pairs: Sequence[tuple[float, bool]], bins: int = BINS) -> dict:
    """{"n", "ece", "bins": [{"low", "high", "n", "confidence", "accuracy"}]}: ECE is the clip-weighted mean gap
    between a bin's mean confidence and its accuracy (None with no pairs)."""
    table = []
    for i in range(bins):
        low, high = i / bins, (i + 1) / bins
        inside = [(c, r) for c, r in pairs if low <= c < high or (i == bins - 1 and c == 1.0)]
        table.append({"low": low, "high": high, "n": len(inside),
                      "confidence": sum(c for c, _ in inside) / len(inside) if inside else None,
                      "accuracy": sum(r for _, r in inside) / len(inside) if inside else None})
    n = len(pairs)
    ece = sum(b["n"] * abs(b["confidence"] - b["accuracy"]) for b in table if b["n"]) / n if n else None
    return {"n": n, "ece": ece, "bins": table}


def coverage(pairs: Sequence[tuple[float, bool]], thresholds: Sequence[float] = COVERAGE_THRESHOLDS) -> list[dict]:
    """Per min_confidence threshold: the share of answers kept (coverage) and their accuracy."""
    out = []
    for t in thresholds:
        kept = [r for c, r in pairs if c >= t]
        out.append({"min_confidence": t, "coverage": len(kept) / len(pairs) if pairs else None,
                    "accuracy": sum(kept) / len(kept) if kept else None})
    return out


def calibration_report(predictions: Sequence[dict], names: Sequence[str], schema: MetadataSchema) -> dict:
    """{field: {"n", "ece", "bins", "coverage"}} for the label and bool fields of `names`."""
    out = {}
    for name in names:
        if schema.field(name).kind == "text":
            continue
        pairs = scored_pairs(predictions, name, schema)
        out[name] = {**reliability(pairs), "coverage": coverage(pairs)}
    return out


def write_reliability(name: str, scores: dict, out_dir: Path) -> str:
    """reliability-<field>.png when matplotlib is installed, else reliability-<field>.csv -> the file's name."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        path = out_dir / f"reliability-{name}.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, ["low", "high", "n", "confidence", "accuracy"])
            writer.writeheader()
            writer.writerows(scores["bins"])
        return path.name
    path = out_dir / f"reliability-{name}.png"
    figure = Figure(figsize=(4.2, 4.2))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    used = [b for b in scores["bins"] if b["n"]]
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    ax.bar([b["low"] for b in used], [b["accuracy"] for b in used], width=1 / len(scores["bins"]), align="edge",
           alpha=0.7, edgecolor="black", label="accuracy")
    ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], "o", color="black")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{name}: ECE {scores['ece']:.3f} (n={scores['n']})")
    ax.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path.name
