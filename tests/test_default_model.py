"""The default model that ships inside the package: loads offline and answers with its heads."""

import numpy as np
import pytest

import speechllm
from speechllm.data.synth import negatives, resolve_voices, synthesize


@pytest.fixture(scope="module")
def model():
    return speechllm.default_model()


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(3)
    male, female = resolve_voices(["espeak:en-us+m3", "espeak:en-us+f2"])
    text = "The museum opens at nine in the morning on weekdays."
    return [synthesize(male, text, rng), synthesize(female, text, rng), negatives.make_negative("noise", rng, 3.0)]


def test_the_default_model_has_its_heads(model):
    assert model.attribute_heads is not None
    assert sorted(model.attribute_heads.fields) == ["Accent", "Gender", "SpeechActivity"]
    assert model.metadata_schema.names == ["SpeechActivity", "Transcript", "Gender", "Accent"]


def test_the_default_model_tells_speech_from_noise_and_men_from_women(model, clips):
    results = model.generate_meta([(c, 16000) for c in clips])
    assert all(r.valid for r in results)
    assert [r.values["SpeechActivity"] for r in results] == [True, True, False]
    assert [r.values["Gender"] for r in results[:2]] == ["Male", "Female"]
    assert results[2].values["Transcript"] == ""  # no speech, no words
    assert "museum" in results[0].values["Transcript"].lower()
    for result in results:
        assert set(result.confidences) == {"SpeechActivity", "Gender", "Accent"}
        assert all(0.0 < p <= 1.0 for p in result.confidences.values())
