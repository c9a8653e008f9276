"""Who the model fails: the evaluation's slices by reference gender, accent and dataset on a hand-made set,
speaker fields scored on speech only, and the progress lines of a long evaluation."""

import io
import json

import pytest

from speechllm.evaluation import evaluate
from speechllm.evaluation.runner import summarize
from speechllm.evaluation.slices import ProgressLine, slice_report
from speechllm.metadata import SPEECHLLM_SCHEMA
from tests.test_evaluation import wav, write_manifest

NAMES = ["SpeechActivity", "Transcript", "Gender", "Accent"]


def _row(dataset, reference, prediction):
    return {"id": "x", "dataset": dataset, "reference": reference, "prediction": prediction, "confidences": {},
            "seconds": 1.0, "processing_s": 0.5, "json_valid": True}


ROWS = [  # WER per group and gender accuracy are worked out by hand in the test below
    _row("lj", {"SpeechActivity": True, "Transcript": "a b c d", "Gender": "Female", "Accent": "America"},
         {"SpeechActivity": True, "Transcript": "a b c d", "Gender": "Female", "Accent": "America"}),
    _row("cv", {"SpeechActivity": True, "Transcript": "a b", "Gender": "Male", "Accent": "South-Asia"},
         {"SpeechActivity": True, "Transcript": "a x", "Gender": "Female", "Accent": "America"}),
    _row("cv", {"SpeechActivity": True, "Transcript": "c d", "Gender": "Male", "Accent": "America"},
         {"SpeechActivity": True, "Transcript": "c d", "Gender": "Male", "Accent": "America"}),
    _row("cv", {"SpeechActivity": False, "Gender": "Male"},  # noise with a stray label: no speaker to score
         {"SpeechActivity": False, "Transcript": "", "Gender": None, "Accent": None}),
]


def test_slices_by_gender_accent_and_dataset_are_computed_right():
    slices = slice_report(ROWS, lambda rows: summarize(rows, NAMES, SPEECHLLM_SCHEMA))
    assert list(slices) == ["Gender", "Accent", "dataset"]
    assert list(slices["Gender"]) == ["Female", "Male"] and list(slices["Accent"]) == ["America", "South-Asia"]
    male, female = slices["Gender"]["Male"], slices["Gender"]["Female"]
    assert male["clips"] == 3 and male["wer"]["wer"] == pytest.approx(1 / 4)  # 1 error in "a b" + "c d"
    assert female["wer"]["wer"] == 0.0
    assert male["attributes"]["Gender"]["n"] == 2 and male["attributes"]["Gender"]["accuracy"] == 0.5
    assert slices["Accent"]["South-Asia"]["attributes"]["Accent"]["accuracy"] == 0.0
    assert slices["dataset"]["cv"]["clips"] == 3 and slices["dataset"]["lj"]["attributes"]["Gender"]["accuracy"] == 1
    assert slices["dataset"]["cv"]["attributes"]["SpeechActivity"]["n"] == 3  # speech activity: every clip


def test_speaker_fields_are_scored_only_where_the_reference_has_speech():
    summary = summarize(ROWS, NAMES, SPEECHLLM_SCHEMA)
    assert summary["attributes"]["Gender"]["n"] == 3  # not the no-speech row
    assert summary["attributes"]["Gender"]["accuracy"] == pytest.approx(2 / 3)


def test_progress_lines_say_clips_done_elapsed_and_time_left():
    now = [0.0]
    stream = io.StringIO()
    progress = ProgressLine(100, every=30, stream=stream, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 10
        progress.update(10)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "eval: 30/100 clips, 0m30s elapsed, about 1m10s left"
    assert len(lines) == 4 and lines[-1] == "eval: 100/100 clips, 1m40s elapsed"  # every 30 s, and the end


def test_evaluate_reports_slices_calibration_and_progress(tiny, tmp_path, capsys):
    rows = [{"audio": wav(tmp_path / f"{i}.wav", seed=i), "transcript": "hello there", "speech_activity": True,
             "gender": gender, "accent": accent, "dataset": dataset}
            for i, (gender, accent, dataset) in enumerate([("female", "Indian English", "a"),
                                                           ("male", "American English", "a"),
                                                           ("male", "Indian English", "b")])]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    report = evaluate(tiny, manifest, out_dir=tmp_path / "out", baselines=(), batch_size=2)
    assert report["slices"]["Gender"]["Male"]["clips"] == 2 and report["slices"]["dataset"]["b"]["clips"] == 1
    assert set(report["calibration"]) == {"SpeechActivity", "Gender", "Accent"}
    assert report["calibration"]["Gender"]["n"] + sum(
        json.loads(line)["prediction"].get("Gender") is None
        for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 3
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Slices: who the model fails" in md and "| Gender | Male | 2 |" in md
    assert "## Calibration of the confidences" in md and "reliability-Gender." in md
    assert "eval: 3/3 clips" in capsys.readouterr().err  # stderr is no terminal here: progress lines
