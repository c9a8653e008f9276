"""`speechllm infer`: files, folders and manifests in, one JSON line per clip out; a bad file gets an error line
and exit code 1 while the others still run."""

import json

import numpy as np
import pytest
import soundfile as sf

import speechllm
from speechllm.cli import main
from speechllm.errors import ConfigError, SpeechLLMError
from speechllm.inference import collect_inputs, infer_clips, split_model_argument
from tests.conftest import packaged_at

RATE = 16000


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


@pytest.fixture(scope="module")
def api_answer(model_dir):
    """What the same saved model answers through the Python API about (a segment of) a file: (Gender, confidence)."""
    model = speechllm.load(model_dir)

    def answer(path, offset_s=0.0, duration_s=None):
        samples, rate = sf.read(path, dtype="float32")
        start = round(offset_s * rate)
        end = None if duration_s is None else start + round(duration_s * rate)
        result = model.generate_meta((samples[start:end], rate), fields=["Gender"])
        return result.values["Gender"], pytest.approx(result.confidences["Gender"], abs=1e-4)

    return answer


def gender(line) -> tuple:
    return line["Gender"], line["confidences"]["Gender"]


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


def test_manifest_input_and_missing_file(model_dir, folder, tmp_path, capsys, api_answer):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "seg", "audio": "clips/a.wav", "offset_s": 0.25, "duration_s": 0.5}) + "\n"
                        + json.dumps({"audio": "clips/gone.wav"}) + "\n" + "{broken\n")
    code, lines, _ = run(capsys, model_dir, manifest, "--fields", "Gender")
    assert code == 1 and len(lines) == 3
    assert lines[0]["audio"] == "seg" and gender(lines[0]) == api_answer(folder / "a.wav", 0.25, 0.5)
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
    packaged_at(monkeypatch, "default", folder / "no-default-model-here")
    code, lines, err = run(capsys, folder)
    assert code == 1 and lines == [] and "pass a model path" in err


def test_without_a_model_the_default_model_answers(model_dir, folder, capsys, monkeypatch, api_answer):
    packaged_at(monkeypatch, "default", model_dir)
    code, lines, _ = run(capsys, folder / "a.wav", "--fields", "Gender")
    assert code == 0 and gender(lines[0]) == api_answer(folder / "a.wav")


# --- bad options and bad manifest rows ----------------------------------------------------------------


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--batch-size", "-1"), ("--max-new-tokens", "0"),
                                         ("--batch-size", "two")])
def test_bad_numbers_are_refused_before_the_model_loads(folder, capsys, monkeypatch, flag, value):
    monkeypatch.setattr(speechllm.models.loading, "load", lambda *a, **k: pytest.fail("the model must not load"))
    with pytest.raises(SystemExit) as caught:
        main(["infer", str(folder / "a.wav"), flag, value])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and f"argument {flag}:" in err and value in err and "Traceback" not in err


def test_bad_options_in_the_library_fail_before_any_clip(tiny, folder):
    clips = collect_inputs([str(folder / "a.wav")])
    for kwargs, words in [({"batch_size": 0}, "batch_size"), ({"max_new_tokens": -5, "transcribe": True},
                          "max_new_tokens"), ({"instruction": "  "}, "instruction"), ({"fields": ["Mood"]}, "Mood")]:
        with pytest.raises(SpeechLLMError, match=words):
            infer_clips(tiny, clips, progress=False, **kwargs)  # raises at the call, not at the first answer


def test_a_failed_run_leaves_an_earlier_out_file_intact(model_dir, folder, tmp_path, capsys):
    out = tmp_path / "answers.jsonl"
    out.write_text('{"audio": "earlier run"}\n')
    assert main(["infer", str(model_dir), str(folder / "a.wav"), "--fields", "Mood", "--out", str(out)]) == 1
    assert "unknown metadata field 'Mood'" in capsys.readouterr().err
    assert out.read_text() == '{"audio": "earlier run"}\n'
    assert main(["infer", str(model_dir), str(folder / "a.wav"), "--out", str(tmp_path)]) == 1  # a folder
    assert "--out" in capsys.readouterr().err


def test_bad_manifest_rows_get_error_lines_and_the_others_run(model_dir, folder, tmp_path, capsys, api_answer):
    manifest = tmp_path / "m.jsonl"
    rows = [{"audio": "clips/a.wav", "offset_s": "abc"}, {"audio": "clips/a.wav", "duration_s": "2"},
            {"audio": "clips/a.wav", "offset_s": None, "id": "whole"}, {"audio": "clips/a.wav", "duration_s": -1}]
    manifest.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + b'{"audio": "\xff.wav"}\n')
    code, lines, _ = run(capsys, model_dir, manifest, "--fields", "Gender")
    assert code == 1 and [line.get("audio") for line in lines] == [f"{manifest}:1", f"{manifest}:2", "whole",
                                                                  f"{manifest}:4", f"{manifest}:5"]
    assert "offset_s must be a number" in lines[0]["error"] and "duration_s must be a number" in lines[1]["error"]
    assert gender(lines[2]) == api_answer(folder / "a.wav") and "duration_s > 0" in lines[3]["error"]
    assert "not UTF-8" in lines[4]["error"]


# --- the Python API ---------------------------------------------------------------------------------


def test_api_bad_arguments_raise_clear_errors(tiny):
    clip = (0.1 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32), RATE)
    cases = [
        (lambda: tiny.transcribe(clip, batch_size=0), "batch_size must be a positive"),
        (lambda: tiny.transcribe(clip, max_new_tokens=0), "max_new_tokens must be a positive"),
        (lambda: tiny.generate_meta(clip, max_new_tokens=-3), "max_new_tokens must be a positive"),
        (lambda: tiny.generate_meta([clip, clip], batch_size=-1), "batch_size must be a positive"),
        (lambda: tiny.transcribe(clip, instruction=5), "instruction must be non-empty text"),
        (lambda: tiny.generate_meta(clip, instruction=""), "instruction must be non-empty text"),
        (lambda: tiny.generate_meta((clip[0], "16000")), "sampling rate must be a positive number"),
    ]
    for call, words in cases:
        with pytest.raises(SpeechLLMError, match=words):
            call()


def test_api_array_pair_with_any_number_type_is_one_clip(tiny):
    samples = 0.1 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32)
    expected = tiny.generate_meta((samples, RATE), fields=["Gender"]).values
    for rate in (16000.0, np.int64(16000)):
        assert tiny.generate_meta((samples, rate), fields=["Gender"]).values == expected
    assert tiny.generate_meta((samples, RATE), fields="Gender").values == expected  # one field name as a string
