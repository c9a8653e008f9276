"""load_audio and friends: every accepted input gives float32 mono at 16 kHz; every bad one a clear AudioError."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from speechllm.audio import SAMPLE_RATE, load_audio, load_audio_segment, pad_batch, split_windows
from speechllm.errors import AudioError


def sine(freq=1000.0, rate=SAMPLE_RATE, seconds=1.0, amplitude=0.5):
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x, rate=SAMPLE_RATE):
    return np.argmax(np.abs(np.fft.rfft(x))) * rate / len(x)


def write(path, data, rate=SAMPLE_RATE, **kw):
    sf.write(path, data, rate, **kw)
    return path


# --- files, bytes, file objects ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix, subtype, tolerance",
    [("wav", "PCM_16", 1e-4), ("flac", "PCM_16", 1e-4), ("ogg", "VORBIS", None), ("mp3", None, None)],
)
def test_file_round_trip(tmp_path, suffix, subtype, tolerance):
    x = sine()
    path = write(tmp_path / f"tone.{suffix}", x, subtype=subtype)
    for source in (path, str(path)):
        y = load_audio(source)
        assert y.dtype == np.float32 and y.ndim == 1
        assert len(y) == len(x)
        if tolerance:  # lossless: sample for sample
            np.testing.assert_allclose(y, x, atol=tolerance)
        else:  # lossy codecs: same tone, same loudness
            assert abs(peak_hz(y) - 1000) < 2
            assert abs(np.sqrt(np.mean(y**2)) - np.sqrt(np.mean(x**2))) < 0.05


def test_bytes_and_file_object(tmp_path):
    x = sine(rate=8000)
    path = write(tmp_path / "tone.flac", x, rate=8000)
    from_path = load_audio(path)
    assert len(from_path) == SAMPLE_RATE
    np.testing.assert_array_equal(load_audio(path.read_bytes()), from_path)
    np.testing.assert_array_equal(load_audio(io.BytesIO(path.read_bytes())), from_path)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(load_audio(f), from_path)


def test_stereo_file_is_downmixed(tmp_path):
    left, right = sine(amplitude=0.4), np.zeros(SAMPLE_RATE, np.float32)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), left / 2, atol=1e-6)


def test_datasets_shapes(tmp_path):
    x = sine()
    path = write(tmp_path / "tone.wav", x, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio({"array": x, "sampling_rate": SAMPLE_RATE, "path": None}), x)
    np.testing.assert_array_equal(load_audio({"path": str(path), "bytes": None}), x)
    np.testing.assert_array_equal(load_audio({"path": "elsewhere.wav", "bytes": path.read_bytes()}), x)
    np.testing.assert_array_equal(load_audio((x, SAMPLE_RATE)), x)


# --- arrays and tensors -----------------------------------------------------------------------------


def test_array_is_copied_not_aliased():
    x = sine()
    y = load_audio(x, SAMPLE_RATE)
    np.testing.assert_array_equal(y, x)
    y[:] = 0
    assert x.any()


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_stereo_array_downmix(layout):
    left, right = sine(amplitude=0.2), sine(freq=300, amplitude=0.6)
    stereo = np.stack([left, right]) if layout == "channels_first" else np.stack([left, right], axis=1)
    np.testing.assert_allclose(load_audio(stereo, SAMPLE_RATE), (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(load_audio(torch.from_numpy(stereo), SAMPLE_RATE), (left + right) / 2, atol=1e-6)


def test_integer_pcm_is_scaled():
    pcm16 = np.array([0, 16384, -32768, 32767], np.int16)
    np.testing.assert_allclose(load_audio(pcm16, SAMPLE_RATE), [0, 0.5, -1, 32767 / 32768])
    pcm8 = np.array([128, 0, 255], np.uint8)
    np.testing.assert_allclose(load_audio(pcm8, SAMPLE_RATE), [0, -1, 127 / 128])
    pcm32 = np.array([2**30, -(2**31)], np.int32)
    np.testing.assert_allclose(load_audio(pcm32, SAMPLE_RATE), [0.5, -1])


def test_int16_matches_float_file(tmp_path):
    x = sine()
    path = write(tmp_path / "tone.wav", x, subtype="PCM_16")
    pcm, _ = sf.read(path, dtype="int16")
    np.testing.assert_allclose(load_audio(pcm, SAMPLE_RATE), load_audio(path), atol=1e-7)


def test_bfloat16_tensor_with_grad():
    x = torch.from_numpy(sine()).to(torch.bfloat16).requires_grad_()
    y = load_audio(x, SAMPLE_RATE)
    assert y.dtype == np.float32 and len(y) == SAMPLE_RATE


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_resampling_keeps_length_and_pitch(rate):
    y = load_audio(sine(rate=rate), rate)
    assert len(y) == SAMPLE_RATE
    assert abs(peak_hz(y) - 1000) < 2


def test_silence_is_valid(tmp_path):
    np.testing.assert_array_equal(load_audio(np.zeros(4000, np.float32), SAMPLE_RATE), np.zeros(4000))
    path = write(tmp_path / "silence.wav", np.zeros(SAMPLE_RATE, np.float32))
    assert not load_audio(path).any()


# --- bad inputs -------------------------------------------------------------------------------------


def bad_inputs(tmp_path):
    """(case, source, kwargs, words the message must contain)."""
    text = tmp_path / "notes.wav"
    text.write_text("these are meeting notes, not audio")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(write(tmp_path / "full.wav", sine()).read_bytes()[:20])
    empty = write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    zero_bytes = tmp_path / "zero-bytes.wav"
    zero_bytes.write_bytes(b"")
    nan, inf = sine(), sine()
    nan[100], inf[100] = np.nan, np.inf
    return [
        ("missing", tmp_path / "missing.wav", {}, ["missing.wav", "not found"]),
        ("directory", tmp_path, {}, [str(tmp_path), "not a regular file"]),
        ("text file", text, {}, ["notes.wav", "cannot decode"]),
        ("truncated header", truncated, {}, ["truncated.wav", "cannot decode"]),
        ("garbage bytes", b"RIFF....garbage", {}, ["<bytes>", "cannot decode"]),
        ("zero-length wav", empty, {}, ["empty.wav", "empty"]),
        ("0-byte file", zero_bytes, {}, ["zero-bytes.wav", "empty (0 bytes)"]),
        ("empty array", np.zeros(0, np.float32), {"sampling_rate": 16000}, ["<array>", "empty"]),
        ("NaN", nan, {"sampling_rate": 16000}, ["<array>", "NaN"]),
        ("inf", inf, {"sampling_rate": 16000}, ["inf"]),
        ("dict", {"text": "hello"}, {}, ["<dict>", "'array'", "'path'"]),
        ("int", 42, {}, ["<int>", "type int"]),
        ("string dtype", np.array(["a", "b"]), {"sampling_rate": 16000}, ["dtype"]),
        ("3-D", np.zeros((2, 2, 100), np.float32), {"sampling_rate": 16000}, ["shape"]),
        ("no rate", sine(), {}, ["sampling rate", "sampling_rate="]),
        ("zero rate", sine(), {"sampling_rate": 0}, ["positive", "0"]),
        ("negative rate", (sine(), -16000), {}, ["positive", "-16000"]),
        ("conflicting rates", (sine(), 8000), {"sampling_rate": 16000}, ["8000", "16000"]),
        ("too short", sine(seconds=0.01), {"sampling_rate": 16000, "min_samples": 400}, ["0.0100 s", "0.0250 s"]),
        ("too long", sine(seconds=3), {"sampling_rate": 16000, "max_seconds": 2}, ["3.00 s", "max_seconds=2 s"]),
        ("named", nan, {"sampling_rate": 16000, "name": "utt-7"}, ["utt-7", "NaN"]),
    ]


def test_bad_inputs_raise_clear_errors(tmp_path):
    for case, source, kwargs, words in bad_inputs(tmp_path):
        with pytest.raises(AudioError) as caught:
            load_audio(source, **kwargs)
        message = str(caught.value)
        for word in words:
            assert word in message, f"{case}: {word!r} missing from {message!r}"
        assert "Traceback" not in message and "object at 0x" not in message, case


def test_too_short_is_counted_after_resampling():
    # 100 samples at 8 kHz become 200 at 16 kHz: enough for min_samples=200, not for 201.
    assert len(load_audio(np.ones(100, np.float32), 8000, min_samples=200)) == 200
    with pytest.raises(AudioError, match="shorter"):
        load_audio(np.ones(100, np.float32), 8000, min_samples=201)


def test_audio_error_is_a_value_error():
    with pytest.raises(ValueError):
        load_audio([0.0, 0.1])


# --- segments ---------------------------------------------------------------------------------------


def test_segment_reads_the_requested_span(tmp_path):
    x = np.arange(3 * 8000, dtype=np.float32) / 32768  # exact in PCM_16, so samples can be compared
    path = write(tmp_path / "ramp.wav", x, rate=8000)
    y = load_audio_segment(path, offset_s=1.0, duration_s=0.5)
    assert len(y) == 8000  # 0.5 s at 16 kHz
    np.testing.assert_allclose(y, load_audio(x[8000:12000], 8000), atol=1e-4)
    assert len(load_audio_segment(path, offset_s=2.5)) == 8000  # to the end
    np.testing.assert_allclose(load_audio_segment(path), load_audio(path))


@pytest.mark.parametrize(
    "offset_s, duration_s, words",
    [
        (3.5, None, ["3.500 s", "3.000 s long"]),
        (2.5, 1.0, ["3.500 s", "outside"]),
        (-1, None, ["offset_s >= 0"]),
        (0, 0, ["duration_s > 0"]),
    ],
)
def test_segment_outside_file(tmp_path, offset_s, duration_s, words):
    path = write(tmp_path / "three.wav", sine(seconds=3))
    with pytest.raises(AudioError) as caught:
        load_audio_segment(path, offset_s, duration_s)
    assert "three.wav" in str(caught.value)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("offset_s, duration_s", [("abc", None), (0, "2"), (float("nan"), None), (0, float("inf")),
                                                  (True, None)])
def test_segment_bounds_of_the_wrong_type_are_clear(tmp_path, offset_s, duration_s):
    path = write(tmp_path / "three.wav", sine(seconds=3))
    with pytest.raises(AudioError, match="three.wav: .* must be a finite number of seconds"):
        load_audio_segment(path, offset_s, duration_s)


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3")
def test_cut_short_mp3_is_not_called_missing(tmp_path):
    full = tmp_path / "full.mp3"
    sf.write(full, sine(seconds=2), SAMPLE_RATE, format="MP3")
    stub = tmp_path / "stub.mp3"
    stub.write_bytes(full.read_bytes()[:100])  # libsndfile says "File does not exist" of this existing file
    with pytest.raises(AudioError) as caught:
        load_audio(stub)
    assert "stub.mp3: cannot decode" in str(caught.value) and "does not exist" not in str(caught.value)


def test_segment_of_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio_segment(tmp_path / "gone.flac", 1.0, 1.0)


# --- windows and batches ----------------------------------------------------------------------------


def test_split_windows_exact_multiple():
    x = np.arange(12)
    windows = split_windows(x, 4)
    assert [w.tolist() for w in windows] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_split_windows_remainder_and_short_clip():
    x = torch.arange(10)
    assert [len(w) for w in split_windows(x, 4)] == [4, 4, 2]
    assert torch.equal(torch.cat(split_windows(x, 4)), x)
    assert [len(w) for w in split_windows(x, 30)] == [10]
    assert split_windows(np.zeros(0), 4) == []
    with pytest.raises(AudioError):
        split_windows(x, 0)


def test_pad_batch():
    clips = [np.ones(3, np.float32), np.full(5, 2.0, np.float32), np.zeros(0, np.float32)]
    batch, lengths = pad_batch(clips)
    assert batch.dtype == torch.float32 and batch.shape == (3, 5)
    assert lengths.dtype == torch.long and lengths.tolist() == [3, 5, 0]
    assert batch[0].tolist() == [1, 1, 1, 0, 0]
    assert batch[1].tolist() == [2] * 5
    assert not batch[2].any()
    batch, lengths = pad_batch([])
    assert batch.shape == (0, 0) and lengths.tolist() == []
    with pytest.raises(AudioError, match="shape"):
        pad_batch([np.zeros((2, 3))])
