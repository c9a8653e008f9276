"""Writing a modality-gap report: report.json (everything), report.md (one table, a row per system) and
predictions.jsonl (every request with the three systems' answers, for error analysis)."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = ["System", "Transcript WER", "QA acc", "QA EM vs text", "QA ROUGE-L vs text",
           "Summary ROUGE-L vs text", "Summary ROUGE-L vs reference"]
_DASH = "–"
_SYSTEM_NAMES = {"speech": "speech (the clip)", "text": "text (reference transcript, oracle)",
                 "cascade": "cascade (faster-whisper transcript)"}


def _num(value, percent: bool = False) -> str:
    if value is None:
        return _DASH
    return f"{100 * value:.2f}%" if percent else f"{value:.3f}"


def table(scores: dict, systems: list[str]) -> list[str]:
    """Markdown table lines of one score block (`modality_gap.score`): a row per system."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for system in systems:
        s = scores[system]
        lines.append("| " + " | ".join([
            _SYSTEM_NAMES[system], _num(s["wer"], percent=True), _num(s["qa_accuracy"]),
            _num(s.get("qa_exact_match_vs_text")), _num(s.get("qa_rouge_l_vs_text")),
            _num(s.get("summary_rouge_l_vs_text")), _num(s["summary_rouge_l_vs_reference"])]) + " |")
    return lines


def markdown(report: dict) -> str:
    """report.md: what was asked, the table for all clips, then per group (short / long passages)."""
    systems, everything = report["systems"], report["all"]
    lines = [f"# Modality gap of {report['model']}", "",
             f"Manifests: {', '.join(report['manifests'])}. {everything['clips']} clips, {everything['questions']} "
             f"questions, {everything['summaries']} summaries; prompt style: {report['prompt_style']}; greedy "
             f"decoding. Cascade: {report['cascade']}.", "",
             "The same model answers the same requests with the clip (speech), with the reference transcript as text "
             "(text) and with faster-whisper's transcript as text (cascade). Transcript WER: corpus WER of the "
             "model's own transcription (speech) and of faster-whisper (cascade). QA acc: the answer contains the "
             "normalised fact. EM / ROUGE-L vs text: agreement with the text run's answers.", ""]
    lines += table(everything, systems)
    for name, scores in report["groups"].items():
        lines += ["", f"## {name} ({scores['clips']} clips, {scores['questions']} questions)", ""]
        lines += table(scores, systems)
    lines += ["", "## Left out", ""]
    lines += [f"- {path}:{row['line']}: {row['reason']}" for path, rows in report["skipped_rows"].items()
              for row in rows] or ["- no unreadable rows"]
    lines += [f"- clip {c['id']}: {c['error']}" for c in report["failed_clips"]]
    return "\n".join(lines) + "\n"


def write_gap_report(report: dict, predictions: list[dict], out_dir) -> Path:
    """Write report.json, report.md and predictions.jsonl into `out_dir` (created) -> out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for row in predictions:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out
