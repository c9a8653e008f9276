from pathlib import Path
"""`speechllm infer`: files, folders and manifests in, one JSON line per clip out; a bad file gets an error line
and exit code 1 while the others still run."""

import json

import numpy as np
import pytest
import soundfile as sf

import speechllm
from speechllm.cli import main
from speechllm.errors import ConfigError
from speechllm.evaluation.batch_infer import collect_inputs, split_model_argument

RATE = 16000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from speechllm.testing import tiny_model

    path = tmp_path_factory.mktemp("model")
    tiny_model().save_pretrained(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """clips/a.wav, clips/sub/b.flac, and clips/broken.wav (text, not audio)."""
    root = tmp_path / "clips"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(root / "a.wav", 0.1 * rng.standard_normal(RATE).astype(np.float32), RATE)
    sf.write(root / "sub" / "b.flac", 0.1 * rng.standard_normal(RATE // 2).astype(np.float32), RATE)
    (root / "broken.wav").write_text("not audio at all")
    (root / "notes.txt").write_text("ignored: not an audio suffix")
    return root


def run(capsys, *argv):
    code = main(["infer", *map(str, argv)])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_folder_with_a_corrupt_file(model_dir, folder, capsys):
    code, lines, _ = run(capsys, model_dir, folder)
    assert code == 1
    assert [line["audio"] for line in lines] == [str(folder / n) for n in ["a.wav", "broken.wav", "sub/b.flac"]]
    broken = lines[1]
    assert set(broken) == {"audio", "error"} and "broken.wav" in broken["error"]
    for line in (lines[0], lines[2]):  # default: every field of the model's schema
        assert "error" not in line and line["valid"] is True
        assert set(line) >= {"SpeechActivity", "Transcript", "Gender", "Age", "Accent", "Emotion", "confidences"}


def test_fields_transcribe_and_instruction_modes(model_dir, folder, tmp_path, capsys):
    good = folder / "a.wav"
    code, lines, _ = run(capsys, model_dir, good, "--fields", "Gender,Accent")
    assert code == 0 and list(lines[0]) == ["audio", "Gender", "Accent", "confidences", "valid"]
    out = tmp_path / "out.jsonl"
    assert main(["infer", str(model_dir), str(good), "--transcribe", "--max-new-tokens", "4", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())) == {"audio", "transcript"}
    code, lines, _ = run(capsys, model_dir, good, "--instruction", "Who speaks?", "--max-new-tokens", "4")
    assert code == 0 and isinstance(lines[0]["answer"], str)


def test_manifest_input_and_missing_file(model_dir, folder, tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "seg", "audio": "clips/a.wav", "offset_s": 0.25, "duration_s": 0.5}) + "\n"
                        + json.dumps({"audio": "clips/gone.wav"}) + "\n" + "{broken\n")
    code, lines, _ = run(capsys, model_dir, manifest, "--fields", "Gender")
    assert code == 1 and len(lines) == 3
    assert lines[0]["audio"] == "seg" and lines[0]["Gender"] in ("Female", "Male")
    assert "gone.wav" in lines[1]["error"] and "m.jsonl:3" in lines[2]["error"]


def test_model_argument_is_told_from_audio(model_dir, folder):
    assert split_model_argument([str(model_dir), str(folder)]) == (str(model_dir), [str(folder)])
    assert split_model_argument([str(folder)]) == (None, [str(folder)])  # an audio folder: no config.json
    assert split_model_argument(["org/some-model", "x.wav"]) == ("org/some-model", ["x.wav"])
    with pytest.raises(ConfigError, match="no audio"):
        split_model_argument([str(model_dir)])
    assert [c.name for c in collect_inputs([str(folder / "a.wav"), "missing.wav"])] == [str(folder / "a.wav"),
                                                                                        "missing.wav"]


def test_without_a_model_and_no_default_the_error_says_to_pass_one(folder, capsys, monkeypatch):
    monkeypatch.setattr(speechllm.modeling, "DEFAULT_MODEL", folder / "no-default-model-here")
    code, lines, err = run(capsys, folder)
    assert code == 1 and lines == [] and "pass a model path" in err


def test_without_a_model_the_default_model_answers(model_dir, folder, capsys, monkeypatch):
    monkeypatch.setattr(speechllm.modeling, "DEFAULT_MODEL", Path(model_dir))
    code, lines, _ = run(capsys, folder / "a.wav", "--fields", "Gender")
    assert code == 0 and lines[0]["Gender"] in ("Female", "Male")
