"""Scores: corpus-level WER after Whisper's English normalisation, accuracy, macro-F1, confusion, majority class.

WER is corpus-level, as published ASR results are: total word errors / total reference words over the set,
not the mean of per-utterance WERs (which lets short utterances dominate). Both sides go through Whisper's
English normaliser (the `whisper-normalizer` package, OpenAI's rules: case, punctuation, numbers, British ->
American spelling, contractions), so "Hello, World!" and "hello world" match.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Sequence

from speechllm.extras import require_extra

MISSING = "(none)"  # the prediction of a label the model's answer does not hold (an invalid, cut-off answer)


@functools.cache
def _normalizer():
    require_extra("eval", "Whisper's English normaliser (WER scoring)", ("whisper_normalizer",))
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """Whisper's English normalisation: 'Mr. Smith paid $20, didn't he?' -> 'mister smith paid $20 did not he'."""
    return _normalizer()(text or "")


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """Corpus WER of paired transcripts -> {"wer", "errors", "words", "substitutions", "deletions",
    "insertions", "clips", "empty_references"}. Pairs whose reference normalises to nothing (e.g. only
    filler words) cannot be scored and are counted in `empty_references`; `wer` is None with no words."""
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(references, hypotheses, strict=True)]
    scored = [(r, h) for r, h in pairs if r.strip()]
    out = {"wer": None, "errors": 0, "words": 0, "substitutions": 0, "deletions": 0, "insertions": 0,
           "clips": len(scored), "empty_references": len(pairs) - len(scored)}
    if not scored:
        return out
    require_extra("eval", "WER scoring", ("jiwer",))
    import jiwer  # an optional extra: imported where WER is scored, so `speechllm infer` runs without it

    result = jiwer.process_words([r for r, _ in scored], [h for _, h in scored])
    words = result.hits + result.substitutions + result.deletions
    errors = result.substitutions + result.deletions + result.insertions
    out.update(wer=errors / words, errors=errors, words=words, substitutions=result.substitutions,
               deletions=result.deletions, insertions=result.insertions)
    return out


def label_text(value) -> str:
    """How a label shows in reports: bools as JSON writes them, None as MISSING."""
    return MISSING if value is None else ("true" if value is True else "false" if value is False else str(value))


def classification(truth: Sequence, predicted: Sequence, labels: Sequence | None = None) -> dict:
    """Accuracy, macro-F1 and confusion matrix of paired labels (a prediction may be None: counted wrong).

    `labels`: the classes, in display order (default: those seen, sorted). Macro-F1 averages the F1 of every
    class that occurs in the truth or the predictions (sklearn's default), so never-used classes of a large
    label set do not count. Returns {"n", "accuracy", "macro_f1", "per_class": {label: {"precision", "recall",
    "f1", "support"}}, "labels", "confusion"}: confusion[i][j] counts truth labels[i] predicted as labels[j],
    with a last MISSING column when some prediction is None. Empty input gives n=0 and None scores."""
    truth, predicted = [label_text(t) for t in truth], [label_text(p) for p in predicted]
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    seen = set(truth) | set(predicted)
    names = [label_text(x) for x in labels] if labels is not None else sorted(seen - {MISSING})
    names += sorted(seen - set(names) - {MISSING})
    columns = names + ([MISSING] if MISSING in predicted else [])
    pairs = Counter(zip(truth, predicted))
    confusion = [[pairs[(t, p)] for p in columns] for t in names]
    n = len(truth)
    if not n:
        return {"n": 0, "accuracy": None, "macro_f1": None, "per_class": {}, "labels": names, "confusion": confusion}
    per_class = {}
    for label in sorted(seen - {MISSING}, key=names.index):
        tp = pairs[(label, label)]
        predicted_n, support = predicted.count(label), truth.count(label)
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    accuracy = sum(t == p for t, p in zip(truth, predicted)) / n
    macro_f1 = sum(c["f1"] for c in per_class.values()) / len(per_class)
    return {"n": n, "accuracy": accuracy, "macro_f1": macro_f1, "per_class": per_class, "labels": names,
            "confusion": confusion}


def majority_label(values: Sequence, order: Sequence | None = None):
    """The most frequent value; ties go to the one first in `order` (the schema's label order), so the
    baseline is deterministic. None for no values."""
    counts = Counter(values)
    if not counts:
        return None
    rank = {v: i for i, v in enumerate(order or [])}
    return min(counts, key=lambda v: (-counts[v], rank.get(v, len(rank)), label_text(v)))


# -- free-form answers (the modality-gap evaluation) --------------------------------------------------------


def answer_tokens(text: str) -> list[str]:
    """Words of an answer after Whisper's normalisation, with spoken and written numbers made equal: digit groups
    are joined ("7:45" and "seven forty-five" -> ["745"]), ordinal endings dropped ("14th" -> "14"), spelled
    letters joined ("p m" -> "pm")."""
    words = re.sub(r"[^a-z0-9]+", " ", normalize_text(text)).split()
    words = [re.sub(r"^(\d+)(st|nd|rd|th)$", r"\1", w) for w in words]
    merged: list[str] = []
    for word in words:
        digits = word.isdigit() and merged and merged[-1].isdigit()
        letters = len(word) == 1 and word.isalpha() and merged and len(merged[-1]) == 1 and merged[-1].isalpha()
        if digits or letters:
            merged[-1] += word
        else:
            merged.append(word)
    return merged


def contains_answer(prediction: str, answer: str) -> bool:
    """True when the normalised `answer` occurs, as whole words in order, in the normalised `prediction`
    ("The train leaves at 7:45." contains "seven forty-five"); an empty answer is never contained."""
    needle, haystack = answer_tokens(answer), answer_tokens(prediction)
    return bool(needle) and any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def exact_match(a: str, b: str) -> bool:
    """Same words after `answer_tokens` normalisation ("Room 214." == "room two hundred and fourteen")."""
    return answer_tokens(a) == answer_tokens(b)


@functools.cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of words, `rouge-score`'s tokenizer); 0.0 when either is empty."""
    if not prediction.strip() or not reference.strip():
        return 0.0
    return _rouge().score(reference, prediction)["rougeL"].fmeasure
