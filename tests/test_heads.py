"""Attribute heads: the acoustic features, fitting, saving, and the LLM writing the head's value."""

import copy
import gc
import json
import weakref

import numpy as np
import pytest
import torch

from speechllm.constraint import MetadataConstraint
from speechllm.errors import ConfigError, InputError
from speechllm.heads import (
    AttributeHeads,
    PretrainedExtractors,
    clip_features,
    f0_track,
    fit_heads,
    formant_track,
    model_clip_features,
    pitch_features,
)
from speechllm.metadata import SPEECHLLM_SCHEMA
from speechllm.testing import tiny_model

RATE = 16000


def voice(f0: float, formants=(500.0, 1500.0, 2500.0), seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A vowel by source and filter: a glottal pulse train at `f0` through resonators at `formants`."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    source = np.zeros(n)
    source[(np.arange(0, n, RATE / f0)).astype(int)] = 1.0
    out = source + 1e-4 * rng.standard_normal(n)
    for freq in formants:  # two-pole resonator, 100 Hz bandwidth
        r = np.exp(-np.pi * 100 / RATE)
        a1, a2 = -2 * r * np.cos(2 * np.pi * freq / RATE), r * r
        y = np.zeros(n)
        for i in range(n):
            y[i] = out[i] - a1 * (y[i - 1] if i else 0) - a2 * (y[i - 2] if i > 1 else 0)
        out = y
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


@pytest.mark.parametrize("f0", [95.0, 130.0, 210.0, 300.0])
def test_f0_track_finds_the_pitch_of_a_voice(f0):
    track = f0_track(voice(f0))
    assert len(track) > 50
    assert np.median(track) == pytest.approx(f0, rel=0.03)


def test_f0_track_calls_noise_and_silence_unvoiced():
    rng = np.random.default_rng(0)
    assert len(f0_track(np.zeros(RATE, dtype=np.float32))) == 0
    noise = f0_track(0.1 * rng.standard_normal(RATE).astype(np.float32))
    assert len(noise) < 10  # of ~95 frames
    features = pitch_features([np.zeros(RATE, dtype=np.float32)])
    assert features[0, 0] == 0.0 and np.isfinite(features).all()


def test_formant_track_finds_the_resonances():
    formants = (600.0, 1700.0, 2900.0)
    track = formant_track(voice(120.0, formants))
    assert len(track) > 20
    np.testing.assert_allclose(np.median(track, axis=0), formants, rtol=0.08)


def test_a_head_fitted_on_pitch_separates_low_and_high_voices():
    clips = [voice(f0, seed=i) for i, f0 in enumerate([100, 110, 120, 130, 200, 215, 230, 250])]
    labels = {"Gender": ["Male"] * 4 + ["Female"] * 4}
    heads = fit_heads(SPEECHLLM_SCHEMA, {"Gender": ["pitch"]}, {"pitch": pitch_features(clips)}, labels)
    unseen = [voice(105.0, seed=50), voice(240.0, seed=51)]
    predicted = heads.predict(unseen, ["Gender", "Transcript"])
    assert [p["Gender"].value for p in predicted] == ["Male", "Female"]
    assert all(p["Gender"].confidence > 0.5 for p in predicted)
    assert all("Transcript" not in p for p in predicted)


def test_fit_heads_refuses_a_text_field_and_a_single_class():
    features = {"pitch": np.zeros((4, 4), dtype=np.float32)}
    with pytest.raises(ConfigError, match="free text"):
        fit_heads(SPEECHLLM_SCHEMA, {"Transcript": ["pitch"]}, features, {"Transcript": ["a"] * 4})
    with pytest.raises(ConfigError, match="two different values"):
        fit_heads(SPEECHLLM_SCHEMA, {"Gender": ["pitch"]}, features, {"Gender": ["Male"] * 3 + [None]})


def _gender_model():
    model = tiny_model()
    clips = [voice(f0, seed=i) for i, f0 in enumerate([100, 115, 125, 210, 230, 250])]
    features = model_clip_features(model, clips, ["encoder", "pitch"])
    labels = {"Gender": ["Male"] * 3 + ["Female"] * 3, "SpeechActivity": [True, False] * 3}
    model.attribute_heads = fit_heads(model.metadata_schema, {"Gender": ["pitch"], "SpeechActivity": ["encoder"]},
                                      features, labels)
    return model


def test_the_llm_writes_the_heads_value_and_its_confidence():
    model = _gender_model()
    clips = [(voice(108.0, seed=70), RATE), (voice(235.0, seed=71), RATE)]
    fields = ["Gender", "Transcript", "SpeechActivity"]
    results = model.generate_meta(clips, fields=fields)
    assert [r.values["Gender"] for r in results] == ["Male", "Female"]
    for result in results:
        assert result.valid
        assert list(json.loads(result.text)) == fields
        assert 0.5 < result.confidences["Gender"] <= 1.0
    # the same clips without heads: the random LLM chooses on its own
    model.attribute_heads = None
    plain = model.generate_meta(clips, fields=fields)
    assert all(r.valid for r in plain)


def test_encoder_layers_pool_every_layer_and_decide_in_generation():
    model = tiny_model()
    clips = [voice(f0, seed=i) for i, f0 in enumerate([100, 115, 125, 210, 230, 250])]
    features = model_clip_features(model, clips, ["encoder", "encoder_layers"])
    layers = model.encoder.model.config.num_hidden_layers + 1
    width = features["encoder"].shape[1]
    assert features["encoder_layers"].shape == (len(clips), layers * width)
    # mean and deviation per layer, layer after layer: the last block is the encoder's output, pooled
    np.testing.assert_allclose(features["encoder_layers"][:, -width:], features["encoder"], atol=1e-5)
    labels = {"Gender": ["Male"] * 3 + ["Female"] * 3}
    model.attribute_heads = fit_heads(model.metadata_schema, {"Gender": ["encoder_layers"]}, features, labels)
    unseen = [voice(f0, seed=60 + i) for i, f0 in enumerate([105.0, 240.0, 118.0])]
    with torch.no_grad():
        expected = model.attribute_heads.heads["Gender"](model_clip_features(model, unseen, ["encoder_layers"]))
    results = model.generate_meta([(c, RATE) for c in unseen], fields=["Gender", "Transcript"], batch_size=3)
    values = model.metadata_schema.field("Gender").choices
    assert [r.values["Gender"] for r in results] == [values[int(p.argmax())] for p in expected]
    assert [r.confidences["Gender"] for r in results] == pytest.approx([float(p.max()) for p in expected], abs=1e-4)
    assert all(r.valid for r in results)


def test_encoder_features_pool_the_clip_not_the_padding_of_whisper_window():
    clips = [voice(110.0, seconds=0.6, seed=1), voice(220.0, seconds=1.4, seed=2)]
    cropped = model_clip_features(tiny_model(), clips, ["encoder", "encoder_layers"])
    whole = tiny_model(encoder={"crop_to_length": False})  # the same weights, frames of the whole 30 s window
    assert whole.encoder.output_length(len(clips[0])) == 1500
    for name, value in model_clip_features(whole, clips, ["encoder", "encoder_layers"]).items():
        np.testing.assert_allclose(value, cropped[name], atol=1e-5)


def test_heads_are_saved_and_loaded_with_the_model(tmp_path):
    model = _gender_model()
    clip = (voice(112.0, seed=80), RATE)
    before = model.generate_meta(clip, fields=["Gender", "SpeechActivity"])
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "heads.json").exists()
    loaded = type(model).from_pretrained(tmp_path / "m")
    assert loaded.attribute_heads is not None
    assert sorted(loaded.attribute_heads.fields) == ["Gender", "SpeechActivity"]
    after = loaded.generate_meta(clip, fields=["Gender", "SpeechActivity"])
    assert after.values == before.values
    assert after.confidences == pytest.approx(before.confidences)
    # heads are not model weights: the checkpoint's own weights are unchanged by them
    assert not any("attribute_heads" in k for k in loaded.state_dict())


def test_broken_heads_files_give_a_clear_error(tmp_path):
    model = _gender_model()
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "heads.json").write_text("{not json")
    with pytest.raises(ConfigError, match="attribute heads do not load"):
        type(model).from_pretrained(tmp_path / "m")


def test_forced_values_are_checked():
    model = tiny_model()
    tokenizer = model.processor.tokenizer
    with pytest.raises(InputError, match="Gender"):
        MetadataConstraint(tokenizer, SPEECHLLM_SCHEMA, ["Gender"], forced=[{"Gender": "Robot"}])
    with pytest.raises(InputError, match="free text"):
        MetadataConstraint(tokenizer, SPEECHLLM_SCHEMA, ["Transcript"], forced=[{"Transcript": "hi"}])


def test_heads_recipe_keys_are_checked(tmp_path):
    from speechllm.training.config import load_train_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("heads: {Gender: [pitch, loudness]}\n")
    with pytest.raises(ConfigError, match="heads.Gender"):
        load_train_config(recipe)
    recipe.write_text("heads: {Gender: [pitch, formants]}\n")
    assert load_train_config(recipe).heads == {"Gender": ["pitch", "formants"]}


def test_loaded_heads_match_torch_predictions(tmp_path):
    model = _gender_model()
    model.attribute_heads.save(tmp_path)
    again = AttributeHeads.load(tmp_path, model.metadata_schema)
    for name in ["Gender", "SpeechActivity"]:
        original = model.attribute_heads.heads[name].state_dict().values()
        for a, b in zip(again.heads[name].state_dict().values(), original):
            assert torch.equal(a, b)


def test_voice_embeddings_are_unit_vectors_closer_for_the_same_voice():
    from speechllm.heads import voice_features

    a1, a2 = voice(110.0, (500, 1400, 2400), 2.0, seed=1), voice(110.0, (500, 1400, 2400), 2.0, seed=2)
    other = voice(240.0, (700, 1900, 3100), 2.0, seed=3)
    e = voice_features([a1, a2, other])
    assert e.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]
    np.testing.assert_allclose(voice_features([a1]), e[:1], atol=1e-5)  # the batch does not change a clip's embedding


def test_no_speech_by_the_head_means_an_empty_transcript():
    model = tiny_model()
    rng = np.random.default_rng(0)
    speech = [voice(f0, seed=i) for i, f0 in enumerate([110, 150, 220, 260])]
    quiet = [(0.05 * rng.standard_normal(RATE)).astype(np.float32) for _ in range(4)]
    features = model_clip_features(model, speech + quiet, ["pitch"])
    model.attribute_heads = fit_heads(model.metadata_schema, {"SpeechActivity": ["pitch"]}, features,
                                      {"SpeechActivity": [True] * 4 + [False] * 4})
    fields = ["SpeechActivity", "Transcript"]
    noise, vowel = (0.05 * rng.standard_normal(RATE)).astype(np.float32), voice(180.0, seed=9)
    without_speech, with_speech = model.generate_meta([(noise, RATE), (vowel, RATE)], fields=fields)
    assert without_speech.values == {"SpeechActivity": False, "Transcript": ""}
    assert json.loads(without_speech.text) == without_speech.values and without_speech.valid
    assert with_speech.values["SpeechActivity"] is True


def test_heads_command_fits_heads_onto_a_saved_model(tmp_path, capsys):
    import soundfile as sf

    from speechllm.cli import main

    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    rows = []
    for i, (f0, gender) in enumerate([(100, "Male"), (120, "Male"), (210, "Female"), (240, "Female")]):
        sf.write(tmp_path / f"{i}.wav", voice(f0, seed=i), RATE)
        rows.append({"audio": f"{i}.wav", "transcript": "a", "gender": gender})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["heads", str(tmp_path / "model"), str(tmp_path / "train.jsonl"), "--head", "Gender=pitch",
                 "--out", str(tmp_path / "with-heads")]) in (0, None)
    loaded = type(model).from_pretrained(tmp_path / "with-heads")
    assert loaded.attribute_heads.fields == ["Gender"]
    assert loaded.generate_meta((voice(230.0, seed=9), RATE), fields=["Gender"]).values == {"Gender": "Female"}
    assert main(["heads", str(tmp_path / "model"), str(tmp_path / "train.jsonl"), "--head", "Gender=loudness",
                 "--out", str(tmp_path / "x")]) == 1
    assert "FIELD=FEATURE" in capsys.readouterr().err


def _voice_and_vad_heads():
    spec = {"Gender": {"features": ["voice"], "width": 256}, "SpeechActivity": {"features": ["vad"], "width": 3}}
    torch.manual_seed(0)  # the same random weights for every call
    return AttributeHeads(SPEECHLLM_SCHEMA, spec)


def test_heads_own_their_pretrained_models_and_free_them_when_dropped():
    """No hidden cache shared between owners: each heads object loads the voice encoder and the VAD it reads, and
    dropping it (or releasing its extractors) frees them."""
    first, second = _voice_and_vad_heads(), _voice_and_vad_heads()
    clips = [voice(120.0, seconds=1.0, seed=1), voice(230.0, seconds=1.0, seed=2)]
    fields = ["Gender", "SpeechActivity"]
    before = first.predict(clips, fields)
    assert sorted(first.extractors.loaded) == ["vad", "voice"]
    assert second.extractors.loaded == []  # the first heads' models are theirs alone
    assert second.predict(clips, fields) == before
    assert second.extractors.voice_encoder is not first.extractors.voice_encoder
    assert second.extractors.vad is not first.extractors.vad
    models = [weakref.ref(first.extractors.voice_encoder), weakref.ref(first.extractors.vad)]
    del first
    gc.collect()
    assert [m() for m in models] == [None, None]
    models = [weakref.ref(second.extractors.voice_encoder), weakref.ref(second.extractors.vad)]
    second.extractors.release()
    gc.collect()
    assert [m() for m in models] == [None, None] and second.extractors.loaded == []
    assert second.predict(clips, fields) == before  # released models load again on next use


def test_heads_that_loaded_their_models_can_be_copied():
    heads = _voice_and_vad_heads()
    clips = [voice(150.0, seconds=1.0, seed=3)]
    before = heads.predict(clips, ["Gender", "SpeechActivity"])
    copied = copy.deepcopy(heads)  # an ONNX session cannot be copied: the copy loads its own models
    assert copied.extractors is not heads.extractors and copied.extractors.loaded == []
    assert copied.predict(clips, ["Gender", "SpeechActivity"]) == before


def test_fitted_heads_keep_the_models_that_computed_their_features():
    extractors = PretrainedExtractors()
    clips = [voice(f0, seconds=1.0, seed=i) for i, f0 in enumerate([100, 120, 220, 250])]
    features = clip_features(["vad"], clips, extractors=extractors)
    heads = fit_heads(SPEECHLLM_SCHEMA, {"SpeechActivity": ["vad"]}, features,
                      {"SpeechActivity": [True, False, True, False]}, extractors=extractors)
    vad = extractors.vad
    heads.predict(clips, ["SpeechActivity"])
    assert heads.extractors is extractors and heads.extractors.vad is vad  # not loaded a second time
