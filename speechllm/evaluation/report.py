"""Writing an evaluation report: report.json (everything), report.md (SpeechLLM's "Checkpoint Result" table plus
details, slices and calibration), predictions.jsonl (one row per clip, for error analysis), confusion-<Field>.png
and reliability-<Field>.png (or .csv without matplotlib) per attribute.
"""

from __future__ import annotations

import json
from pathlib import Path

from speechllm.extras import require_extra

from .calibration import write_reliability
from .metrics import MISSING

TABLE_COLUMNS = ["Dataset", "Clips", "WER", "Gender Acc", "Age Acc", "Accent Acc", "Emotion Acc",
                 "Speech-activity Acc", "JSON valid", "RTF"]
# Table column -> schema field of SpeechLLM's table.
_ACC_COLUMNS = {"Gender Acc": "Gender", "Age Acc": "Age", "Accent Acc": "Accent", "Emotion Acc": "Emotion",
                "Speech-activity Acc": "SpeechActivity"}
_DASH = "–"


def write_report(report: dict, predictions: list[dict], out_dir) -> Path:
    """Write the report files into `out_dir` (created) -> out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report["confusion_plots"] = {}
    for name, scores in report["all"]["attributes"].items():
        if scores["n"]:
            path = out / f"confusion-{name}.png"
            plot_confusion(scores, f"{name} (all datasets, n={scores['n']})", path)
            report["confusion_plots"][name] = path.name
    report["reliability_plots"] = {name: write_reliability(name, scores, out)
                                   for name, scores in report.get("calibration", {}).items() if scores["n"]}
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str) + "\n",
                                     encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for row in predictions:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return out


def _acc(scores: dict | None) -> str:
    if not scores or not scores["n"]:
        return _DASH
    return f"{scores['accuracy']:.3f} ({scores['n']})"


def _wer(wer: dict | None) -> str:
    if not wer or wer["wer"] is None:
        return _DASH
    return f"{100 * wer['wer']:.2f}% ({wer['clips']})"


def _num(value, spec: str = ".3f") -> str:
    return _DASH if value is None else format(value, spec)


def _row(name: str, summary: dict) -> list[str]:
    attributes = summary.get("attributes", {})
    return [name, str(summary["clips"]), _wer(summary.get("wer")),
            *(_acc(attributes.get(field)) for field in _ACC_COLUMNS.values()),
            _num(summary.get("json_valid")), _num(summary.get("rtf"), ".4f")]


def table_rows(report: dict) -> list[list[str]]:
    """The "Checkpoint Result" rows: one per dataset, "All" (when several), then the baseline rows."""
    rows = [_row(name, summary) for name, summary in report["groups"].items()]
    if len(report["groups"]) > 1:
        rows.append(_row("**All**", report["all"]))
    baselines = report["baselines"]
    cascade = baselines.get("cascade")
    if cascade and "all" in cascade:
        c = cascade["all"]
        rows.append([f"All: cascade, {cascade['system']}", str(c["wer"]["clips"]), _wer(c["wer"]),
                     *[_DASH] * 5, _DASH, _num(c["rtf"], ".4f")])
    majority = baselines.get("majority")
    if majority:
        m = majority["all"]
        rows.append(["All: majority class", str(report["all"]["clips"] - report["all"]["failed"]), _DASH,
                     *(_acc(m.get(field)) for field in _ACC_COLUMNS.values()), _DASH, _DASH])
    return rows


def markdown(report: dict) -> str:
    """report.md: the table, then per-attribute macro-F1, baselines by dataset, and what was left out."""
    lines = [f"# Evaluation of {report['model']}", "",
             f"Manifests: {', '.join(report['manifests'])}. Asked for: {', '.join(report['fields'])} "
             f"(constrained JSON, greedy). Device: {report['device']}.", "",
             "WER: corpus-level (word errors / reference words), after Whisper's English normalisation, on speech "
             "clips with a reference transcript; accuracies: share of labelled clips; (n) = clips scored; "
             "RTF = processing seconds / audio seconds.", "",
             "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    lines += ["", "## Attributes (all datasets)", "", "| Field | n | Accuracy | Macro-F1 | Majority acc | Plot |",
              "|---|---|---|---|---|---|"]
    majority = report["baselines"].get("majority", {}).get("all", {})
    for name, s in report["all"]["attributes"].items():
        plot = report.get("confusion_plots", {}).get(name)
        lines.append(f"| {name} | {s['n']} | {_num(s['accuracy'])} | {_num(s['macro_f1'])} | "
                     f"{_num((majority.get(name) or {}).get('accuracy'))} | {f'![]({plot})' if plot else _DASH} |")
    lines += _slice_lines(report) + _calibration_lines(report)
    cascade = report["baselines"].get("cascade")
    if cascade:
        lines += ["", f"## Cascade baseline: {cascade['system']}", ""]
        if "skipped" in cascade:
            lines.append(f"Not run: {cascade['skipped']}")
        else:
            lines += ["| Dataset | Clips | WER | RTF |", "|---|---|---|---|"]
            for name, c in cascade["groups"].items():
                if c["wer"]["clips"]:
                    lines.append(f"| {name} | {c['wer']['clips']} | {_wer(c['wer'])} | {_num(c['rtf'], '.4f')} |")
    if report["baselines"].get("majority"):
        m = report["baselines"]["majority"]
        lines += ["", "Majority class: " + m["note"] + "; labels: "
                  + ", ".join(f"{k}={v}" for k, v in m["labels"].items()) + "."]
    lines += ["", "## Left out", ""]
    lines += [f"- {path}:{row['line']}: {row['reason']}" for path, rows in report["skipped_rows"].items()
              for row in rows] or ["- no unreadable rows"]
    lines += [f"- clip {c['id']}: {c['error']}" for c in report["failed_clips"]]
    lines += [f"- {name} labels with no schema counterpart (not scored): "
              + ", ".join(f"{raw!r} x{n}" for raw, n in counts.items()) for name, counts in
              report["unmapped_labels"].items() if counts]
    return "\n".join(lines) + "\n"


def _slice_lines(report: dict) -> list[str]:
    """Per group of clips (reference gender, accent, dataset): the table's scores, to see who the model fails."""
    slices = report.get("slices") or {}
    if not slices:
        return []
    columns = ["Slice", "Group", "Clips", "WER", *(c for c in TABLE_COLUMNS[3:8])]
    lines = ["", "## Slices: who the model fails", "",
             "The table's scores per group of clips, by the reference's gender and accent and by dataset "
             "(speaker fields scored on speech clips only).", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, groups in slices.items():
        for group, summary in groups.items():
            attributes = summary.get("attributes", {})
            lines.append("| " + " | ".join([name, group, str(summary["clips"]), _wer(summary.get("wer")),
                                            *(_acc(attributes.get(f)) for f in _ACC_COLUMNS.values())]) + " |")
    return lines


def _calibration_lines(report: dict) -> list[str]:
    """ECE and accuracy against coverage (answers kept at each min_confidence) per label field."""
    calibration = {k: v for k, v in (report.get("calibration") or {}).items() if v["n"]}
    if not calibration:
        return []
    thresholds = [c["min_confidence"] for c in next(iter(calibration.values()))["coverage"]]
    lines = ["", "## Calibration of the confidences", "",
             "ECE: expected calibration error (10 bins; 0 = a confidence of p is right a share p of the time). "
             "Then, for each min_confidence, the share of answers kept / their accuracy.", "",
             "| Field | n | ECE | Plot | " + " | ".join(f">= {t:g}" for t in thresholds) + " |",
             "|" + "---|" * (4 + len(thresholds))]
    for name, c in calibration.items():
        plot = report.get("reliability_plots", {}).get(name, "")
        link = f"![]({plot})" if plot.endswith(".png") else f"[{plot}]({plot})" if plot else _DASH
        cells = [f"{_num(x['coverage'], '.2f')} / {_num(x['accuracy'], '.3f')}" for x in c["coverage"]]
        lines.append(f"| {name} | {c['n']} | {_num(c['ece'])} | {link} | " + " | ".join(cells) + " |")
    return lines


def plot_confusion(scores: dict, title: str, path: Path) -> None:
    """A confusion matrix (rows: reference, columns: prediction) as a PNG, drawn with matplotlib's Agg canvas
    (no display and no global pyplot state)."""
    require_extra("eval", "confusion-matrix plots", ("matplotlib",))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix, rows = scores["confusion"], scores["labels"]
    columns = rows + [MISSING] * (len(matrix[0]) - len(rows))  # classification() adds one MISSING column
    size = 1.6 + 0.55 * max(len(rows), len(columns))
    figure = Figure(figsize=(size + 1, size))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=ax)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    ax.set_title(title)
    peak = max((max(r) for r in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
