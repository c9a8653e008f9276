"""Decode budgets and container checks: a clip's cost is frames x channels, so rate, channels and samples are
bounded from the header before anything is decoded, decoding runs in blocks, and only allowlisted containers,
matching what the sender declared, ever reach libsndfile."""

import io
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

import speechllm.audio_decode as audio_decode
from speechllm.audio import DecodeLimits, load_audio, load_audio_segment, set_max_concurrent_decodes
from speechllm.errors import AudioError
from speechllm.records import header_seconds


def encoded(data, rate, fmt, **kw) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format=fmt, **kw)
    return buffer.getvalue()


def noise(frames, channels=None, seed=0):
    shape = (frames,) if channels is None else (frames, channels)
    return (0.1 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def streaming_flac(samples, rate=16000) -> bytes:
    """A FLAC whose STREAMINFO says 0 total samples ("unknown"), as streaming encoders write it."""
    data = bytearray(encoded(samples, rate, "FLAC"))
    # fLaC, a 4-byte block header, then STREAMINFO; its 8 bytes at offset 18 end with the 36-bit sample count.
    packed = struct.unpack(">Q", bytes(data[18:26]))[0] & ~((1 << 36) - 1)
    data[18:26] = struct.pack(">Q", packed)
    return bytes(data)


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if a single frame is decoded: refusals must come from the header alone."""

    def read(*args, **kwargs):
        raise AssertionError("decoded frames before refusing")

    monkeypatch.setattr(audio_decode._ForwardReader, "read", read)


# --- bombs: refused from the header ---------------------------------------------------------------------


def test_channel_bomb_ogg_is_refused_before_decoding(no_decoding):
    bomb = encoded(np.zeros((4800, 255), np.float32), 48000, "OGG")  # 0.1 s of 255 channels of silence
    with pytest.raises(AudioError, match=r"<bytes>: the header says 255 channels; at most 8 .*max_channels"):
        load_audio(bomb)


def test_sample_rate_bomb_flac_is_refused_before_decoding(tmp_path, no_decoding):
    path = tmp_path / "bomb.flac"
    path.write_bytes(encoded(np.zeros((6554, 8), np.float32), 655350, "FLAC"))
    for call in (lambda: load_audio(path), lambda: load_audio_segment(path, 0.0, 0.005)):
        with pytest.raises(AudioError, match=r"bomb.flac: the header says 655350 Hz; .* 192000 Hz .*max_sample_rate"):
            call()


def test_samples_over_the_budget_are_refused_and_the_limits_can_be_raised(tmp_path):
    # 8 channels at 96 kHz for 1.5 s: 1.15 M samples, over 2 s x 384,000 a second, though within 2 s.
    path = tmp_path / "wide.wav"
    sf.write(path, noise(144_000, 8), 96_000, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"holds 1152000 samples \(144000 frames x 8 channels.*decode budget"):
        load_audio(path, max_seconds=2)
    roomy = DecodeLimits(max_samples_per_second=1_000_000)
    assert len(load_audio(path, max_seconds=2, limits=roomy)) == 24_000
    with pytest.raises(AudioError, match="over the limit of max_seconds=1 s"):  # from the header, before decoding
        load_audio(path, max_seconds=1, limits=roomy)


def test_a_tighter_limit_refuses_what_the_default_decodes(tmp_path):
    path = tmp_path / "stereo48k.flac"
    sf.write(path, noise(4800, 2), 48000)
    assert len(load_audio(path)) == 1600
    for limits, words in [(DecodeLimits(max_channels=1), "2 channels"), (DecodeLimits(max_sample_rate=44_100),
                                                                         "48000 Hz"),
                          (DecodeLimits(max_seconds=0.05), "DecodeLimits.max_seconds=0.05")]:
        with pytest.raises(AudioError, match=words):
            load_audio(path, limits=limits)


@pytest.mark.parametrize("field, value", [("max_channels", 0), ("max_sample_rate", -1), ("max_seconds", float("nan")),
                                          ("block_samples", True)])
def test_decode_limits_are_checked(field, value):
    with pytest.raises(AudioError, match=f"DecodeLimits.{field} must be a positive number"):
        DecodeLimits(**{field: value})


# --- headers that lie or say nothing --------------------------------------------------------------------


def test_flac_whose_header_gives_no_length_decodes_to_its_real_end(tmp_path):
    x = noise(40_000)
    data = streaming_flac(x)
    assert sf.info(io.BytesIO(data)).frames > 2**62  # libsndfile's "unknown"
    np.testing.assert_allclose(load_audio(data), x, atol=1e-4)
    with pytest.raises(AudioError, match=r"audio is over 2.00 s long, over the limit of max_seconds=2 s"):
        load_audio(data, max_seconds=2)  # decoding stops at the budget instead of trusting the header
    path = tmp_path / "stream.flac"
    path.write_bytes(data)
    assert header_seconds(str(path)) == pytest.approx(2.5)  # not 5.8e14 s
    np.testing.assert_allclose(load_audio_segment(path, 1.0, 0.5), x[16000:24000], atol=1e-4)


# --- memory and concurrency -----------------------------------------------------------------------------


def test_decode_peak_memory_is_a_block_and_the_mono_output_not_frames_x_channels(tmp_path):
    # 2 s of 255 channels at 48 kHz: 24.5 M samples, 98 MB as float32 if decoded whole (as it was).
    path = tmp_path / "wide.wav"
    with sf.SoundFile(path, "w", 48000, 255, subtype="PCM_U8") as f:
        for _ in range(8):
            f.write(np.zeros((12000, 255), np.float32))
    permissive = DecodeLimits(max_channels=255, max_samples_per_second=10**9)
    tracemalloc.start()
    try:
        samples = load_audio(path, limits=permissive)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(samples) == 32000
    whole = 96000 * 255 * 4
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB while decoding (the whole file: {whole / 2**20:.0f} MiB)"


def test_concurrent_decodes_are_capped(tmp_path, monkeypatch):
    path = tmp_path / "clip.wav"
    sf.write(path, noise(1600), 16000)
    running, peak, lock = 0, 0, threading.Lock()
    read_mono = audio_decode._read_mono

    def counting(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)  # long enough for the other threads to arrive
        with lock:
            running -= 1
        return read_mono(*args, **kwargs)

    monkeypatch.setattr(audio_decode, "_read_mono", counting)
    try:
        for cap in (1, 2):
            set_max_concurrent_decodes(cap)
            peak = 0
            threads = [threading.Thread(target=load_audio, args=(path,)) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert peak == cap
    finally:
        set_max_concurrent_decodes(4)
    with pytest.raises(AudioError, match="at least 1"):
        set_max_concurrent_decodes(0)


# --- containers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, name", [("AU", "AU"), ("AIFF", "AIFF")])
def test_a_container_other_than_the_declared_one_is_refused(tmp_path, fmt, name, no_decoding):
    data = encoded(noise(1600), 16000, fmt)
    with pytest.raises(AudioError, match=f"declared as WAV, but the bytes are {name}"):
        load_audio(data, format="wav")
    with pytest.raises(AudioError, match=f"cannot decode as audio: the bytes are {name}, not one of WAV/FLAC/OGG/MP3"):
        load_audio(data)  # undeclared: still only allowlisted containers
    path = tmp_path / f"clip.{fmt.lower()}"
    path.write_bytes(data)
    with pytest.raises(AudioError, match=f"clip.{fmt.lower()}: cannot decode as audio: the bytes are {name}"):
        load_audio(path)


def test_declared_formats_that_match_decode(tmp_path):
    x = noise(1600)
    for fmt, declared in [("WAV", "wav"), ("WAV", "x-wav"), ("FLAC", "audio/flac"), ("OGG", "opus")]:
        data = encoded(x, 16000, fmt)
        assert len(load_audio(data, format=declared)) == 1600
    with pytest.raises(AudioError, match="'aiff' is not allowed"):
        load_audio(encoded(x, 16000, "AIFF"), format="aiff")
    aiff = DecodeLimits(formats=("wav", "aiff"))  # a caller may allow more containers, knowingly
    np.testing.assert_allclose(load_audio(encoded(x, 16000, "AIFF"), format="aiff", limits=aiff), x, atol=1e-4)


def test_the_server_checks_the_container_before_libsndfile_reads_it(monkeypatch):
    from speechllm.serving import limits
    from speechllm.serving.config import ServerConfig

    def info(*args, **kwargs):
        raise AssertionError("libsndfile parsed a container that was not checked")

    monkeypatch.setattr(limits.sf, "info", info)
    with pytest.raises(AudioError, match=r"audio \(wav\): declared as WAV, but the bytes are AU"):
        limits.decode_clip(encoded(noise(1600), 16000, "AU"), "wav", ServerConfig())


# --- odd inputs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source, kwargs, words", [
    ({"bytes": "AAAA"}, {}, "'bytes' must be the encoded file's bytes, got str"),
    ({"path": 5}, {}, "an audio path must be a string or Path, got int"),
    (np.zeros(100, np.float32), {"sampling_rate": 1e-300}, "1e-300 Hz is outside 1000 to 192000 Hz"),
    (np.zeros(100, np.float32), {"sampling_rate": 10**7}, "outside 1000 to 192000 Hz"),
    (np.zeros(100, np.float32), {"sampling_rate": float("nan")}, "positive number"),
    (np.zeros(100, np.float32), {"sampling_rate": float("inf")}, "positive number"),
    ((np.zeros(100, np.float32), -8000), {}, "positive number"),
    (np.zeros(100, np.float32), {"sampling_rate": 16000, "max_seconds": "2"}, "max_seconds must be a positive"),
    (b"", {}, "no audio container"),
])
def test_odd_inputs_raise_audio_error(source, kwargs, words):
    with pytest.raises(AudioError, match=words):
        load_audio(source, **kwargs)


def test_text_file_object_is_an_audio_error(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, noise(1600), 16000)
    with open(path, encoding="latin-1") as text:
        with pytest.raises(AudioError, match="open it with 'rb'"):
            load_audio(text)


@pytest.mark.parametrize("duration_s", [1e308, 1e30])
def test_a_huge_segment_is_an_audio_error(tmp_path, duration_s):
    path = tmp_path / "clip.wav"
    sf.write(path, noise(16000), 16000)
    with pytest.raises(AudioError, match="clip.wav: .*(outside the file|reach past)"):
        load_audio_segment(path, 0.0, duration_s)
