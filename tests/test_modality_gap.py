"""The modality-gap evaluation: known answers give known scores; it runs end to end on a tiny random model."""

import json

import numpy as np
import pytest
import soundfile as sf

from speechllm.cli import main
from speechllm.errors import ConfigError
from speechllm.evaluation.metrics import contains_answer, exact_match, rouge_l
from speechllm.evaluation.modality_gap import evaluate_gap
from speechllm.prompt_styles import PROMPT_STYLES, resolve_prompt_style

ROWS = [
    {"id": "p1", "transcript": "the ferry to Lisbon leaves at seven forty-five",
     "questions": [{"question": "Where does the ferry go?", "answer": "Lisbon"},
                   {"question": "When does the ferry leave?", "answer": "seven forty-five"}],
     "summary": "ferry to Lisbon at seven forty-five", "length": "short"},
    {"id": "p2", "transcript": "Maria moved the meeting to room twelve",
     "questions": [{"question": "Who moved the meeting?", "answer": "Maria"},
                   {"question": "Which room?", "answer": "twelve"}],
     "summary": "Maria moved the meeting to room twelve", "length": "short"},
]


@pytest.fixture
def passages(tmp_path):
    lines = []
    for i, row in enumerate(ROWS):
        path = tmp_path / f"{row['id']}.wav"
        sf.write(path, 0.1 * np.random.default_rng(i).standard_normal(16000).astype(np.float32), 16000)
        lines.append(json.dumps({**row, "audio": path.name}))
    lines.append(json.dumps({"id": "bad", "audio": "missing.wav", "transcript": "x"}))
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


class StubLLM:
    """Answers from the text of the request: the text run is always right; the speech run mishears the second
    question of each clip ("no idea") and says only the first half of each summary; transcripts miss one word."""

    def chat(self, conversations, max_new_tokens, batch_size):
        return [self._answer(c[0]["content"]) for c in conversations]

    def _answer(self, parts):
        heard = any(p["type"] == "audio" for p in parts)
        text = "".join(p.get("text", "") for p in parts)
        row = next((r for r in ROWS if r["transcript"] in text), None) if not heard else None
        if text.startswith("Transcribe"):
            return "the ferry to lisbon leaves at seven forty" if self.clip(parts) == 0 else \
                "maria moved the meeting to room twelve"
        if text.startswith("Summarize"):
            summary = (row or ROWS[self.clip(parts)])["summary"].split()
            return " ".join(summary if row else summary[: len(summary) // 2])
        source = row or ROWS[self.clip(parts)]
        index = next(i for i, q in enumerate(source["questions"]) if q["question"] in text)
        if row is None and index == 1:
            return "no idea"
        return f"It is {source['questions'][index]['answer']}."

    @staticmethod
    def clip(parts):
        samples = next(p["audio"][0] for p in parts if p["type"] == "audio")
        return 0 if np.allclose(samples[:10], 0.1 * np.random.default_rng(0).standard_normal(10), atol=1e-3) else 1


class StubCascade:
    name = "stub cascade"

    def transcribe(self, clips):
        return [ROWS[StubLLM.clip([{"type": "audio", "audio": (c, 16000)}])]["transcript"] for c in clips]


def test_known_answers_give_known_scores(passages, tmp_path):
    report = evaluate_gap(StubLLM(), passages, out_dir=tmp_path / "out", cascade=StubCascade(), batch_size=3)
    scores = report["all"]
    assert (scores["clips"], scores["questions"], scores["summaries"]) == (2, 4, 2)
    speech, text, cascade = scores["speech"], scores["text"], scores["cascade"]
    assert text["qa_accuracy"] == 1.0 and cascade["qa_accuracy"] == 1.0
    assert speech["qa_accuracy"] == 0.5
    assert speech["qa_exact_match_vs_text"] == 0.5 and cascade["qa_exact_match_vs_text"] == 1.0
    assert speech["qa_rouge_l_vs_text"] == pytest.approx(0.5)  # two identical answers, two with no word in common
    # The first 3 words of 7-token summaries ("forty-five" is two tokens): precision 1, recall 3/7 -> F1 0.6.
    assert speech["summary_rouge_l_vs_text"] == pytest.approx(0.6)
    assert text["summary_rouge_l_vs_reference"] == 1.0
    # Whisper's normaliser reads "seven forty-five" as "745" and "seven forty" as "740": 1 error in 14 words.
    assert speech["wer"] == pytest.approx(1 / 14)
    assert cascade["wer"] == 0.0 and text["wer"] is None
    assert report["skipped_rows"][str(passages)][0]["line"] == 3
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| speech (the clip) | 7.14% | 0.500 | 0.500 |" in markdown
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 2


def test_answer_metrics_match_spoken_and_written_numbers():
    assert contains_answer("It leaves at 7:45 p.m.", "seven forty-five pm")
    assert contains_answer("Room 214, upstairs", "two hundred and fourteen")
    assert not contains_answer("Mariana called", "Maria")
    assert exact_match("Room 12.", "room twelve") and not exact_match("room 12", "12")
    assert rouge_l("a b c", "a b d") == pytest.approx(2 / 3) and rouge_l("", "a") == 0.0


def test_prompt_styles_word_the_same_request_for_audio_and_text():
    few = PROMPT_STYLES["few-shot"]
    parts = few.parts("question", ("clip", 16000), question="Who called?")
    assert [p["type"] for p in parts] == ["text", "audio", "text"]
    # No space token before the clip: its first word brings its own, as " Hi" does in the text run.
    assert parts[0]["text"].endswith("Passage:") and parts[2]["text"] == "\nQuestion: Who called?\nAnswer:"
    text = few.parts("question", "Hi, this is Ann.", question="Who called?")[0]["text"]
    assert text == parts[0]["text"] + " Hi, this is Ann." + parts[2]["text"]
    # A passage of paragraphs is one line, as the worked examples are (a line break ends a completion's answer).
    assert few.parts("question", "Hi, this is Ann.\n\nBye.", question="Who called?")[0]["text"] == \
        parts[0]["text"] + " Hi, this is Ann. Bye." + parts[2]["text"]
    assert few.clean(" Ann\n\nPassage: more") == "Ann"
    plain = PROMPT_STYLES["plain"].parts("question", ("clip", 16000), question="Who called?")
    assert plain == [{"type": "text", "text": "Who called?\n"}, {"type": "audio", "audio": ("clip", 16000)}]
    with pytest.raises(ConfigError, match="unknown prompt style"):
        resolve_prompt_style("chatty")
    with pytest.raises(ConfigError, match="unknown field"):
        resolve_prompt_style({"questions": "{passage}"})


def test_modality_gap_runs_end_to_end_on_a_tiny_random_model(tiny, passages, tmp_path):
    report = evaluate_gap(tiny, passages, out_dir=tmp_path / "out", cascade=None, limit=1,
                          max_new_tokens={"question": 4, "summary": 4})
    assert report["systems"] == ["speech", "text"]
    assert report["all"]["clips"] == 1 and report["all"]["questions"] == 2
    assert 0.0 <= report["all"]["speech"]["qa_rouge_l_vs_text"] <= 1.0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["prompt_style"] == "plain"


def test_eval_gap_cli_refuses_a_bad_prompt_style_before_loading(passages, tmp_path, capsys):
    code = main(["eval-gap", str(tmp_path / "no-model"), str(passages), "--prompt-style", "chatty", "--no-cascade"])
    assert code == 1 and "prompt style" in capsys.readouterr().err


def test_the_cascade_decodes_with_as_many_beams_as_the_models_transcriber(monkeypatch):
    """A like-for-like baseline: gemma-bridge's Whisper decodes with 5 beams, so faster-whisper does too; a model
    whose encoder does not transcribe is compared with greedy faster-whisper."""
    from types import SimpleNamespace

    from speechllm.evaluation import cascade, modality_gap

    made = []

    class Recording:
        def __init__(self, beam_size=1):
            made.append(beam_size)
            self.name = f"beams {beam_size}"

    monkeypatch.setattr(cascade, "unavailable_reason", lambda: None)
    monkeypatch.setattr(cascade, "CascadeASR", Recording)
    bridge = SimpleNamespace(encoder=SimpleNamespace(beams=5))
    assert modality_gap._cascade("auto", modality_gap._transcriber_beams(bridge))[1] == "beams 5"
    assert modality_gap._cascade("auto", modality_gap._transcriber_beams(SimpleNamespace(encoder=object())))[1] == \
        "beams 1"
    assert made == [5, 1]
