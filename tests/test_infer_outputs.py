"""`speechllm infer` under bad inputs and interruptions: a bad row is one error line and the rest still runs;
--out is replaced only by a finished run and is never one of the inputs."""

import json

import numpy as np
import pytest
import soundfile as sf

import speechllm.inference
from speechllm.cli import main
from tests.test_audio_limits import streaming_flac

RATE = 16000


@pytest.fixture
def folder(tmp_path):
    """clips/a.wav and clips/sub/b.flac."""
    (tmp_path / "clips" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "clips" / "a.wav", 0.1 * rng.standard_normal(RATE).astype(np.float32), RATE)
    sf.write(tmp_path / "clips" / "sub" / "b.flac", 0.1 * rng.standard_normal(RATE // 2).astype(np.float32), RATE)
    return tmp_path / "clips"


def run(capsys, *argv):
    code = main(["infer", *map(str, argv)])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_huge_duration_and_a_flac_without_length_do_not_stop_the_run(model_dir, folder, tmp_path, capsys):
    samples, _ = sf.read(folder / "a.wav", dtype="float32")
    (tmp_path / "clips" / "stream.flac").write_bytes(streaming_flac(samples))
    manifest = tmp_path / "m.jsonl"
    rows = [{"audio": "clips/a.wav", "duration_s": 1e308}, {"audio": "clips/stream.flac", "id": "stream"},
            {"audio": "clips/a.wav", "offset_s": 1e300, "id": "far"}, {"audio": "clips/a.wav", "id": "good"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, lines = run(capsys, model_dir, manifest, "--fields", "Gender")
    assert code == 1 and [line["audio"] for line in lines] == [str(tmp_path / "clips/a.wav"), "stream", "far", "good"]
    assert "to 1e+308 s lies outside the file, which is 1.000 s long" in lines[0]["error"]
    assert "from 1e+300 s to the end lies outside the file" in lines[2]["error"]
    # the stream decodes to its real end: the same answer as the clip it was encoded from
    assert "error" not in lines[1] and lines[1]["Gender"] == lines[3]["Gender"]
    assert lines[1]["confidences"]["Gender"] == pytest.approx(lines[3]["confidences"]["Gender"], abs=1e-4)


def test_a_run_that_stops_half_way_leaves_the_earlier_out_file_whole(model_dir, folder, tmp_path, monkeypatch):
    out = tmp_path / "answers.jsonl"
    earlier = "".join(json.dumps({"audio": f"clip {i}"}) + "\n" for i in range(40))
    out.write_text(earlier)
    answer_clips = speechllm.inference.infer_clips

    def stops_after_one(*args, **kwargs):
        lines = answer_clips(*args, **kwargs)

        def generate():
            yield next(iter(lines))
            raise RuntimeError("killed")

        return generate()

    monkeypatch.setattr(speechllm.inference, "infer_clips", stops_after_one)
    with pytest.raises(RuntimeError, match="killed"):
        main(["infer", str(model_dir), str(folder / "a.wav"), str(folder / "sub"), "--out", str(out)])
    assert out.read_text() == earlier
    partial = tmp_path / "answers.jsonl.partial"
    assert [json.loads(line)["audio"] for line in partial.read_text().splitlines()] == [str(folder / "a.wav")]
    monkeypatch.undo()
    assert main(["infer", str(model_dir), str(folder / "a.wav"), str(folder / "sub"), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2 and not partial.exists()


def test_out_may_not_be_an_input(model_dir, folder, tmp_path, capsys, monkeypatch):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "clips/a.wav"}) + "\n")
    original = manifest.read_text(), (folder / "a.wav").read_bytes()
    monkeypatch.chdir(tmp_path)
    for out, inputs in [(manifest, [manifest]), ("./m.jsonl", [manifest]), (folder / "a.wav", [manifest]),
                        (folder / "a.wav", [folder])]:
        assert main(["infer", str(model_dir), *map(str, inputs), "--out", str(out)]) == 1
        assert "is one of the inputs" in capsys.readouterr().err
    assert (manifest.read_text(), (folder / "a.wav").read_bytes()) == original
