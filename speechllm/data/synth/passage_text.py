"""The text of spoken passages: short ones (one kind) with 2-4 questions, long ones (several parts chained into
paragraphs, one to three minutes read aloud) with a summary built from the parts' key facts.

Everything is drawn from the generator it is given, so a seed fixes the passage; values come from the
passage's split only (see `passage_values`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speechllm.data.synth.passage_kinds import KINDS, Part, Question
from speechllm.data.synth.passage_values import ValueDraw
from speechllm.errors import ConfigError

QUESTIONS_PER_PASSAGE = (2, 4)
# Words of a long passage: espeak-ng's 135-195 words a minute come to ~110-160 with its pauses between
# sentences, so 210-300 words take one to three minutes.
LONG_WORDS = (210, 300)
_LONG_FRAMES = {
    "phone message": ("You have several new messages.", "Those were all your messages.", "Your messages"),
    "announcement": ("Here are this evening's travel announcements.", "That is the end of the announcements.",
                     "Tonight's announcements"),
    "news": ("Welcome to the evening bulletin.", "That was the evening bulletin.", "The bulletin"),
    "instructions": ("Here is everything you need for your visits this week.", "Good luck with your visits.",
                     "Your visits"),
    "story": ("Here are a few stories from our listeners.", "Thank you for listening.", "The stories"),
    "reminder": ("Here are this week's office reminders.", "That is all for this week.", "This week's reminders"),
}


@dataclass
class Passage:
    """A passage to speak: its kind, "short" or "long", the text, questions ({"question", "answer"}: each answer a
    span of the text), a reference summary, and every value it states (for checks of the held-out splits)."""

    kind: str
    length: str
    text: str
    questions: list[dict]
    summary: str
    values: list[str]


def _ordered(part: Part, rng: np.random.Generator) -> str:
    """Opener, the body in a random order (facts and distractors mixed), closer."""
    body = [part.body[i] for i in rng.permutation(len(part.body))]
    return " ".join([part.opener, *body, part.closer])


def _pick_questions(candidates: list[Question], count: int, rng: np.random.Generator) -> list[dict]:
    unique = list({q.question: q for q in candidates}.values())
    chosen = sorted(rng.choice(len(unique), size=min(count, len(unique)), replace=False).tolist())
    return [{"question": unique[i].question, "answer": unique[i].answer} for i in chosen]


def _checked(passage: Passage) -> Passage:
    for q in passage.questions:
        if q["answer"] not in passage.text:  # a template bug, never the user's: fail loudly
            raise AssertionError(f"answer {q['answer']!r} is not in the passage {passage.text!r}")
    return passage


def make_passage(kind: str, split: str, rng: np.random.Generator) -> Passage:
    """A short passage of `kind` (one of KINDS) with values of `split`, and 2-4 questions about it."""
    if kind not in KINDS:
        raise ConfigError(f"unknown passage kind {kind!r}; kinds: {sorted(KINDS)}")
    values = ValueDraw(split, rng)
    part = KINDS[kind](values)
    text = _ordered(part, rng)
    count = int(rng.integers(QUESTIONS_PER_PASSAGE[0], QUESTIONS_PER_PASSAGE[1] + 1))
    return _checked(Passage(kind, "short", text, _pick_questions(part.questions, count, rng), part.summary,
                            sorted(values.used)))


def make_long_passage(kind: str, split: str, rng: np.random.Generator,
                      words_range: tuple[int, int] = LONG_WORDS) -> Passage:
    """A long passage: parts of `kind` as paragraphs between an introduction and an ending, until it holds
    `words_range` words (default LONG_WORDS: one to two minutes spoken); anchored questions about any part; the
    summary joins the parts' headlines in one sentence."""
    if kind not in _LONG_FRAMES:
        raise ConfigError(f"unknown passage kind {kind!r}; kinds: {sorted(_LONG_FRAMES)}")
    intro, outro, title = _LONG_FRAMES[kind]
    values = ValueDraw(split, rng)  # shared by the parts: no value repeats, so anchored questions stay unique
    paragraphs, parts, words = [], [], len(intro.split()) + len(outro.split())
    while words < words_range[0]:
        part = KINDS[kind](values)
        paragraph = _ordered(part, rng)
        if parts and words + len(paragraph.split()) > words_range[1]:
            break
        paragraphs.append(paragraph)
        parts.append(part)
        words += len(paragraph.split())
    text = "\n\n".join([intro, *paragraphs, outro])
    candidates = [q for part in parts for q in part.questions if q.anchored]
    count = int(rng.integers(QUESTIONS_PER_PASSAGE[0] + 1, QUESTIONS_PER_PASSAGE[1] + 1))
    facts = [part.headline for part in parts]
    summary = f"{title}: " + "; ".join(facts[:-1]) + ("; and " if len(facts) > 1 else "") + facts[-1] + "."
    return _checked(Passage(kind, "long", text, _pick_questions(candidates, count, rng), summary, sorted(values.used)))
