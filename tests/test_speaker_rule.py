"""No speech, no speaker: where SpeechActivity is false, speaker fields are null and the transcript empty, in
the library, `speechllm infer`, the server (and its JSON Schema); `min_confidence` answers null below it."""

import json

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from speechllm.cli import main
from speechllm.errors import ConfigError
from speechllm.metadata import SPEECHLLM_SCHEMA, Field, MetadataSchema
from speechllm.serving import ServerConfig, create_app
from speechllm.testing import fixed_heads, tiny_model

RATE = 16000
SPEAKER_FIELDS = ["Gender", "Age", "Accent", "Emotion"]


def noise(seed: int = 0) -> np.ndarray:
    return (0.05 * np.random.default_rng(seed).standard_normal(RATE)).astype(np.float32)


@pytest.fixture(scope="module")
def deaf():
    """A tiny model whose speech-activity head is sure nobody speaks, and whose gender head says Male."""
    model = tiny_model()
    model.attribute_heads = fixed_heads(model.metadata_schema, {"SpeechActivity": False, "Gender": "Male"})
    return model


def test_the_schema_marks_speaker_fields_and_round_trips_the_marker():
    assert [f.name for f in SPEECHLLM_SCHEMA.fields if f.speaker] == ["Transcript", *SPEAKER_FIELDS]
    custom = MetadataSchema.from_config([{"name": "Dialect", "kind": "label", "labels": ["A", "B"], "speaker": True}])
    assert MetadataSchema.from_config(custom.to_config()) == custom and custom.field("Dialect").speaker
    with pytest.raises(ConfigError, match="speaker"):
        Field("Loud", "bool", speaker=True)  # a bool cannot be null, so it cannot be a speaker field


def test_json_schema_allows_null_speakers_only_without_speech():
    js = SPEECHLLM_SCHEMA.json_schema(["SpeechActivity", "Transcript", "Gender"])
    assert js["properties"]["Gender"]["enum"] == ["Female", "Male", None]
    assert js["if"] == {"properties": {"SpeechActivity": {"const": False}}}
    assert js["then"]["properties"] == {"Transcript": {"maxLength": 0}, "Gender": {"const": None}}
    assert js["else"]["properties"] == {"Gender": {"type": "string"}}  # with speech, a label
    assert "else" not in SPEECHLLM_SCHEMA.json_schema(["SpeechActivity", "Gender"], not_sure=True)


def test_no_speech_gives_null_speakers_and_no_words_through_the_library(deaf):
    result = deaf.generate_meta((noise(), RATE))
    assert result.valid, result.error
    assert result.values == {"SpeechActivity": False, "Transcript": "", **dict.fromkeys(SPEAKER_FIELDS)}
    assert json.loads(result.text) == result.values  # the JSON the model wrote, nulls included
    # a null speaker field is as sure as the "no speech" it follows from
    assert result.confidences["Gender"] == pytest.approx(result.confidences["SpeechActivity"])
    # asked without SpeechActivity, the head still decides: no speaker, whatever order
    alone = deaf.generate_meta((noise(1), RATE), fields=["Accent", "Gender", "Transcript"])
    assert alone.values == {"Accent": None, "Gender": None, "Transcript": ""} and alone.valid


def test_with_speech_every_speaker_field_gets_a_label():
    model = tiny_model()
    model.attribute_heads = fixed_heads(model.metadata_schema, {"SpeechActivity": True, "Gender": "Male"})
    result = model.generate_meta((noise(), RATE))
    assert result.values["SpeechActivity"] is True and result.values["Gender"] == "Male"
    assert all(result.values[n] is not None for n in SPEAKER_FIELDS)


def test_a_borderline_no_speech_call_answers_speech_and_keeps_the_words():
    model = tiny_model()
    model.attribute_heads = fixed_heads(model.metadata_schema, {"SpeechActivity": False}, confidence=0.9)
    result = model.generate_meta((noise(), RATE), fields=["SpeechActivity", "Gender"])
    assert result.values["SpeechActivity"] is True and result.values["Gender"] is not None
    assert result.confidences["SpeechActivity"] == pytest.approx(0.1, abs=1e-3)  # the head's own doubt


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_llm_alone_keeps_the_rule_whatever_it_samples(seed):
    """No heads: the LLM writes SpeechActivity, and decoding holds the rest to it (in both field orders)."""
    model = tiny_model(seed=seed)  # a different random LLM per seed: some answer speech, some not
    for names in (["SpeechActivity", "Gender", "Transcript"], ["Gender", "Transcript", "SpeechActivity"]):
        for result in model.generate_meta([(noise(i), RATE) for i in range(6)], fields=names):
            assert result.valid, result.error
            speech = result.values["SpeechActivity"]
            assert (result.values["Gender"] is None) == (speech is False)
            assert speech or result.values["Transcript"] == ""


def test_infer_cli_writes_null_speakers(deaf, tmp_path, capsys):
    deaf.save_pretrained(tmp_path / "model")
    sf.write(tmp_path / "noise.wav", noise(), RATE)
    assert main(["infer", str(tmp_path / "model"), str(tmp_path / "noise.wav"), "--fields",
                 "SpeechActivity,Gender,Transcript"]) in (0, None)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["SpeechActivity"] is False and line["Gender"] is None and line["Transcript"] == ""


def test_server_answers_null_speakers_and_abstains_below_min_confidence(deaf, tmp_path):
    import io

    buffer = io.BytesIO()
    sf.write(buffer, noise(), RATE, format="WAV")
    clip = buffer.getvalue()
    unsure = tiny_model()
    unsure.attribute_heads = fixed_heads(unsure.metadata_schema, {"SpeechActivity": True, "Gender": "Male"},
                                         confidence=0.6)
    with TestClient(create_app(deaf, ServerConfig(model_name="deaf"))) as client:
        out = client.post("/v1/metadata", files={"file": ("n.wav", clip)},
                          data={"fields": "SpeechActivity,Gender,Transcript"}).json()
        assert out["metadata"] == {"SpeechActivity": False, "Gender": None, "Transcript": ""}
        assert json.loads(out["text"]) == out["metadata"]
        assert [f["speaker"] for f in client.get("/v1/schema").json()["fields"]][:3] == [False, True, True]
    with TestClient(create_app(unsure, ServerConfig(model_name="unsure"))) as client:
        import base64

        body = {"audio": base64.b64encode(clip).decode(), "fields": ["Gender"]}
        assert client.post("/v1/metadata", json=body).json()["metadata"] == {"Gender": "Male"}
        out = client.post("/v1/metadata", json={**body, "min_confidence": 0.7}).json()
        assert out["metadata"] == {"Gender": None} and out["confidences"]["Gender"] == pytest.approx(0.6, abs=1e-3)
        form = client.post("/v1/metadata", files={"file": ("n.wav", clip)},
                           data={"fields": "Gender", "min_confidence": "0.7"}).json()
        assert form["metadata"] == {"Gender": None}
        bad = client.post("/v1/metadata", files={"file": ("n.wav", clip)}, data={"min_confidence": "2"})
        assert bad.status_code == 400 and "min_confidence" in bad.text


def test_min_confidence_abstains_in_the_library_and_the_cli(tmp_path, capsys):
    model = tiny_model()
    model.attribute_heads = fixed_heads(model.metadata_schema, {"SpeechActivity": True, "Gender": "Female"},
                                        confidence=0.6)
    clip = (noise(), RATE)
    assert model.generate_meta(clip, fields=["Gender"], min_confidence=0.5).values == {"Gender": "Female"}
    unsure = model.generate_meta(clip, fields=["SpeechActivity", "Gender"], min_confidence=0.7)
    assert unsure.values == {"SpeechActivity": True, "Gender": None}  # a bool always answers
    assert json.loads(unsure.text) == unsure.values
    with pytest.raises(ConfigError, match="min_confidence"):
        model.generate_meta(clip, min_confidence=1.5)
    model.save_pretrained(tmp_path / "m")
    sf.write(tmp_path / "a.wav", noise(), RATE)
    assert main(["infer", str(tmp_path / "m"), str(tmp_path / "a.wav"), "--fields", "Gender",
                 "--min-confidence", "0.7"]) in (0, None)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["Gender"] is None
