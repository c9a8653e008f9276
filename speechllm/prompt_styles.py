"""How a model is asked to answer, summarize or write out a clip: plain instructions, or few-shot completions for
base LLMs. Training (`data.tasks`), the modality-gap evaluation and the quick start word requests here, so a model
is asked as it was taught.

A `PromptStyle` holds one template per request (`question`, `summary`, `transcript`) with a `{passage}` slot
where the clip goes (or, for the text run, its transcript) and `{question}` / `{instruction}` slots. A base
model (Gemma 3 270M) continues text rather than following bare instructions, so the "few-shot" style puts two
worked examples first and ends in "Answer:" (a transcript request shows two passages written out word for word,
since a base model asked to "write out" a passage otherwise continues it); its answers are cut at the first line
break, where a base model starts its next made-up example. The same style serves the speech, text and cascade
runs, so any gap between them comes from the modality, not the wording.

A model names its style in its spec (`prompt_style`: a style name), and training words its `asr`, `spoken_qa` and
`summarization` examples in it; the `--prompt-style` option of eval-gap (a name or a JSON file) overrides it; the
default is "plain".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from speechllm.errors import ConfigError
from speechllm.prompting import instructions

PASSAGE_SLOT = "{passage}"


@dataclass(frozen=True)
class PromptStyle:
    name: str
    question: str = "{question}\n{passage}"
    summary: str = "{instruction}\n{passage}"
    transcript: str = "{instruction}\n{passage}"
    question_prefix: str = ""  # worked examples before a question
    summary_prefix: str = ""  # worked examples before a summary request
    transcript_prefix: str = ""  # worked examples before a transcript request
    first_line_only: bool = False  # keep the answer up to its first line break

    def __post_init__(self):
        for name in ("question", "summary", "transcript"):
            if getattr(self, name).count(PASSAGE_SLOT) != 1:
                raise ConfigError(f"prompt style {self.name!r}: the {name} template needs one {PASSAGE_SLOT} slot, "
                                  f"got {getattr(self, name)!r}")

    def parts(self, request: str, passage, *, question: str | None = None) -> list[dict]:
        """Content parts of the user turn for `request` ("question", "summary" or "transcript"); `passage` is an
        audio input (a part of type audio) or a string (the text run: one text part)."""
        template = getattr(self, request)
        prefix = {"question": self.question_prefix, "summary": self.summary_prefix,
                  "transcript": self.transcript_prefix}[request]
        instruction = instructions("summarization" if request == "summary" else "asr")[0]
        before, after = (prefix + template).split(PASSAGE_SLOT)
        before = before.format(question=question, instruction=instruction)
        after = after.format(question=question, instruction=instruction)
        if isinstance(passage, str):
            if self.first_line_only:  # a completion style's passage is one line, as in its examples
                passage = " ".join(passage.split())
            return [{"type": "text", "text": before + passage + after}]
        # The clip's first word brings its own leading space (a transcribing bridge gives " Hi", as the text run's
        # tokenizer does); a space token before it would be one the text run never has.
        before = before.rstrip(" ")
        parts = [{"type": "text", "text": before}] if before else []
        parts.append({"type": "audio", "audio": passage})
        return parts + ([{"type": "text", "text": after}] if after else [])

    def generate_options(self, tokenizer) -> dict:
        """`generate` options for this style: a completion style stops at the first line break (what `clean` keeps),
        instead of writing a made-up next example up to the token limit."""
        return {"stop_strings": ["\n"], "tokenizer": tokenizer} if self.first_line_only else {}

    def clean(self, answer: str) -> str:
        """The answer as scored: stripped, and cut at its first line break for completion styles."""
        answer = answer.strip()
        return answer.split("\n", 1)[0].strip() if self.first_line_only else answer


_EXAMPLES = [
    ("Hi, this is Maria from Cedar Clinic. Your appointment has moved to Tuesday at ten thirty. Please come to "
     "room twelve.", "What time is the appointment?", "ten thirty",
     "Maria from Cedar Clinic moved the appointment to Tuesday at ten thirty in room twelve."),
    ("Attention please. The train to Leeds will leave from platform four. It is running twenty minutes late.",
     "Which platform does the train to Leeds leave from?", "four",
     "The train to Leeds leaves from platform four, twenty minutes late."),
]

PROMPT_STYLES: dict[str, PromptStyle] = {
    "plain": PromptStyle("plain"),
    "few-shot": PromptStyle(
        "few-shot",
        question="Passage: {passage}\nQuestion: {question}\nAnswer:",
        summary="Passage: {passage}\nSummary:",
        transcript="Speech: {passage}\nWritten out:",
        question_prefix="".join(f"Passage: {p}\nQuestion: {q}\nAnswer: {a}\n\n" for p, q, a, _ in _EXAMPLES),
        summary_prefix="".join(f"Passage: {p}\nSummary: {s}\n\n" for p, _, _, s in _EXAMPLES),
        transcript_prefix="".join(f"Speech: {p}\nWritten out: {p}\n\n" for p, _, _, _ in _EXAMPLES),
        first_line_only=True,
    ),
}


def model_prompt_style(model) -> PromptStyle | None:
    """The style `model` was trained in (its spec's `prompt_style`), or None when it names none."""
    name = getattr(getattr(getattr(model, "config", None), "model_spec", None), "prompt_style", None)
    return resolve_prompt_style(name) if name else None


def clip_passage(source):
    """An audio source as a style's passage: a path string becomes a Path, since a plain string is read as text."""
    return Path(source) if isinstance(source, str) else source


def resolve_prompt_style(choice: str | dict | PromptStyle | None, model=None) -> PromptStyle:
    """The style to use: `choice` (a name of PROMPT_STYLES, a JSON file of PromptStyle fields, a dict or a
    PromptStyle), else the model spec's `prompt_style`, else "plain". ConfigError for an unknown name or field."""
    if choice is None and model is not None:
        return model_prompt_style(model) or PROMPT_STYLES["plain"]
    if choice is None:
        return PROMPT_STYLES["plain"]
    if isinstance(choice, PromptStyle):
        return choice
    if isinstance(choice, str):
        if choice in PROMPT_STYLES:
            return PROMPT_STYLES[choice]
        if not Path(choice).is_file():
            raise ConfigError(f"unknown prompt style {choice!r}: use one of {sorted(PROMPT_STYLES)} or a JSON file")
        try:
            choice = json.loads(Path(choice).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"prompt style file {choice}: invalid JSON ({e.msg})") from None
    if not isinstance(choice, dict):
        raise ConfigError(f"a prompt style is a name, a JSON file or a dict, got {choice!r}")
    known = {f.name for f in fields(PromptStyle)}
    unknown = sorted(set(choice) - known)
    if unknown:
        raise ConfigError(f"prompt style: unknown field(s) {unknown}; fields are {sorted(known)}")
    return PromptStyle(**{"name": "custom", **choice})
