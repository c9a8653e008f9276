"""Turn any audio input into what every encoder here expects: float32 mono samples at 16 kHz.

`load_audio` takes paths, encoded bytes, file objects, arrays, tensors and the Hugging Face datasets
shapes; it decodes, downmixes, resamples and validates, and every failure is an `AudioError` that names
the source, the problem and the fix. `load_conversation_audio` does it for every audio part of
conversations, before the processor (which takes waveforms only). `load_audio_segment` reads part of a long
file; `split_windows` and `pad_batch` cut and batch the result.

Decoding is libsndfile's, through soundfile: WAV, FLAC, OGG (Vorbis, Opus) and, from libsndfile 1.1,
MP3, with no ffmpeg, torchaudio or torchcodec needed. Only those containers reach it (sniffed from the bytes),
and `DecodeLimits` bounds what one decode may cost (rate, channels, samples; see `audio_decode`).
"""

from __future__ import annotations

import io
import math
import numbers
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soxr
import torch

from speechllm.audio_decode import (
    ALLOWED_FORMATS,
    DecodeLimits,
    check_format,
    decode_encoded,
    max_concurrent_decodes,
    set_max_concurrent_decodes,
)
from speechllm.errors import AudioError

__all__ = ["ALLOWED_FORMATS", "DecodeLimits", "SAMPLE_RATE", "check_format", "load_audio", "load_audio_segment",
           "load_conversation_audio", "max_concurrent_decodes", "pad_batch", "set_max_concurrent_decodes",
           "split_windows"]

SAMPLE_RATE = 16000

AudioInput = str | Path | bytes | BinaryIO | np.ndarray | torch.Tensor | tuple[np.ndarray, int] | dict[str, Any]
DEFAULT_LIMITS = DecodeLimits()


def load_audio(
    source: AudioInput,
    sampling_rate: float | None = None,
    *,
    max_seconds: float | None = None,
    min_samples: int = 1,
    name: str | None = None,
    format: str | None = None,
    limits: DecodeLimits | None = None,
) -> np.ndarray:
    """Decode, downmix, resample to 16 kHz and validate one clip.

    `source` is one of: a path to an audio file (wav, flac, ogg, mp3, ...); an encoded file's bytes or a
    binary file object; a numpy array or torch tensor, with `sampling_rate`; an `(array, sampling_rate)`
    tuple; a Hugging Face datasets dict, decoded (`{"array", "sampling_rate"}`) or not (`{"path", "bytes"}`).
    `sampling_rate` is required for bare arrays and ignored for encoded audio, which carries its own.

    Arrays are 1-D, or 2-D in either layout: they are averaged over the channel axis, taken to be the
    shorter one (axis 0, channels first, when both are equal). Integer PCM is scaled to [-1, 1].
    `name` replaces the source's description (path, "<bytes>", "<array>") in error messages.
    `format` ('wav', 'flac', 'ogg', 'mp3') is the container encoded audio must be in, as declared by whoever
    sent it; encoded audio is sniffed either way and only `limits.formats` are decoded. `limits` bounds what
    decoding may cost (default `DecodeLimits()`: 1-192 kHz, 8 channels, an hour); it is checked on the header
    before decoding and again while decoding in blocks.

    Returns a 1-D float32 array at SAMPLE_RATE. Raises AudioError when the file is missing or cannot be
    decoded, is not in `format`, is over `limits`, the input has the wrong type or rate, or the clip is empty,
    holds NaN or inf, is shorter than `min_samples` (counted at 16 kHz) or longer than `max_seconds`.
    Silence is valid.
    """
    label = name or _describe(source)
    limits = limits or DEFAULT_LIMITS
    max_seconds = _checked_seconds(max_seconds, label)
    samples, rate = _decode(source, sampling_rate, label, limits, max_seconds, format)
    return _finish(samples, rate, label, limits.duration_limit(max_seconds), min_samples, max_seconds)


def load_conversation_audio(conversations, *, min_samples: int = 1, max_seconds: float | None = None):
    """One conversation (a list of messages) or a list of them, with the source of every audio part (path,
    bytes, array with rate, ...) decoded by `load_audio` into a float32 16 kHz waveform: what the processor
    takes. Messages are copied, never changed in place; anything that is not a well-formed audio part is
    left as it is for the processor to judge. `min_samples` and `max_seconds` are the model's limits
    (`processor.audio_limits`)."""
    if isinstance(conversations, (list, tuple)) and conversations and isinstance(conversations[0], dict):
        return _load_messages(conversations, min_samples, max_seconds)
    if not isinstance(conversations, (list, tuple)):
        return conversations
    return [_load_messages(c, min_samples, max_seconds) if isinstance(c, (list, tuple)) else c for c in conversations]


def _load_messages(messages, min_samples: int, max_seconds: float | None) -> list:
    def loaded(part):
        if isinstance(part, dict) and part.get("type") == "audio" and "audio" in part:
            return {**part, "audio": load_audio(part["audio"], min_samples=min_samples, max_seconds=max_seconds)}
        return part

    out = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, (list, tuple)):
            message = {**message, "content": [loaded(part) for part in content]}
        out.append(message)
    return out


def load_audio_segment(
    path: str | Path,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    *,
    max_seconds: float | None = None,
    min_samples: int = 1,
    name: str | None = None,
    limits: DecodeLimits | None = None,
) -> np.ndarray:
    """Read `duration_s` seconds (to the end when None) from `offset_s` of an audio file, decoding only that part.

    Returns a 1-D float32 array at SAMPLE_RATE, validated like `load_audio` (`limits` apply to the segment).
    Raises AudioError when the segment does not lie inside the file.
    """
    label = name or str(path)
    limits = limits or DEFAULT_LIMITS
    max_seconds = _checked_seconds(max_seconds, label)
    samples, rate = decode_encoded(_existing_file(path, label), label, limits, max_seconds=max_seconds,
                                   segment=(offset_s, duration_s))
    return _finish(samples, rate, label, limits.duration_limit(max_seconds), min_samples, max_seconds)


def split_windows(waveform: np.ndarray | torch.Tensor, window_samples: int) -> list:
    """Cut a clip into consecutive windows of `window_samples` along its last axis; the last may be shorter.

    Takes a numpy array or torch tensor and returns a list of views of it; an empty clip gives [].
    """
    if window_samples <= 0:
        raise AudioError(f"window_samples must be a positive number of samples, got {window_samples}.")
    return [waveform[..., i : i + window_samples] for i in range(0, waveform.shape[-1], window_samples)]


def pad_batch(waveforms: list[np.ndarray] | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D clips with zeros into one batch.

    Returns `(batch, lengths)`: a float32 tensor of shape (len(waveforms), longest clip) and an int64
    tensor holding each clip's length.
    """
    clips = [torch.as_tensor(w, dtype=torch.float32) for w in waveforms]
    for i, clip in enumerate(clips):
        if clip.ndim != 1:
            raise AudioError(f"pad_batch: clip {i} has shape {tuple(clip.shape)}; load_audio gives 1-D clips.")
    lengths = torch.tensor([len(clip) for clip in clips], dtype=torch.long)
    batch = torch.zeros(len(clips), int(lengths.max()) if clips else 0)
    for i, clip in enumerate(clips):
        batch[i, : len(clip)] = clip
    return batch, lengths


def _describe(source: Any) -> str:
    """How error messages name a source: its path where it has one."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, dict):
        if source.get("path"):
            return str(source["path"])
        return "<bytes>" if source.get("bytes") else "<array>" if "array" in source else "<dict>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if hasattr(source, "read"):
        return str(getattr(source, "name", "<file object>"))
    if isinstance(source, (np.ndarray, torch.Tensor, tuple)):
        return "<array>"
    return f"<{type(source).__name__}>"


def _decode(source: Any, sampling_rate: float | None, label: str, limits: DecodeLimits, max_seconds: float | None,
            declared: str | None) -> tuple[np.ndarray, float]:
    """Any accepted input -> (mono float32 samples, their rate)."""

    def encoded(file):
        return decode_encoded(file, label, limits, max_seconds=max_seconds, declared=declared)

    if isinstance(source, dict):
        if "array" in source:
            rate = _one_rate(source.get("sampling_rate"), sampling_rate, label)
            return _from_array(source["array"], rate, label, limits)
        if source.get("bytes") is not None and source.get("bytes") != b"":
            # Audio(decode=False) keeps the bytes when it has them, else only the path
            if not isinstance(source["bytes"], (bytes, bytearray, memoryview)):
                raise AudioError(f"{label}: an audio dict's 'bytes' must be the encoded file's bytes, got "
                                 f"{type(source['bytes']).__name__}; decode base64 text first.")
            return encoded(io.BytesIO(source["bytes"]))
        if source.get("path") is not None and source.get("path") != "":
            return encoded(_existing_file(source["path"], label))
        raise AudioError(
            f"{label}: an audio dict needs 'array' and 'sampling_rate', or 'path' or 'bytes'; got {sorted(source)}."
        )
    if isinstance(source, tuple):
        if len(source) != 2:
            raise AudioError(f"{label}: an audio tuple must be (array, sampling_rate), got {len(source)} items.")
        return _from_array(source[0], _one_rate(source[1], sampling_rate, label), label, limits)
    if isinstance(source, (str, Path)):
        return encoded(_existing_file(source, label))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return encoded(io.BytesIO(source))
    if hasattr(source, "read"):
        return encoded(source)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return _from_array(source, sampling_rate, label, limits)
    raise AudioError(
        f"{label}: cannot load audio from type {type(source).__name__}; pass a file path, encoded bytes, a binary "
        "file object, an array or tensor with sampling_rate, an (array, sampling_rate) tuple or a datasets audio dict."
    )


def _checked_seconds(max_seconds: Any, label: str) -> float | None:
    if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, numbers.Real)
                                    or math.isnan(max_seconds) or max_seconds <= 0):
        raise AudioError(f"{label}: max_seconds must be a positive number of seconds or None, got {max_seconds!r}.")
    return max_seconds


def _one_rate(carried: float | None, given: float | None, label: str) -> float | None:
    """The rate that travels with the array, unless the caller passed a different one too."""
    if carried is not None and given is not None and carried != given:
        raise AudioError(f"{label}: the input says {carried} Hz but sampling_rate={given}; pass only one.")
    return given if carried is None else carried


def _existing_file(path: str | Path, label: str) -> str:
    if not isinstance(path, (str, Path)):
        raise AudioError(f"{label}: an audio path must be a string or Path, got {type(path).__name__}.")
    try:
        path = Path(path)
        exists = path.exists()
    except (OSError, ValueError) as e:  # a NUL byte, a name too long for the system
        raise AudioError(f"{label}: not a usable path ({e}).") from None
    if not exists:
        raise AudioError(f"{label}: audio file not found; check the path (relative paths start at {Path.cwd()}).")
    if not path.is_file():
        raise AudioError(f"{label}: is not a regular file; pass the path of an audio file.")
    if path.stat().st_size == 0:
        raise AudioError(f"{label}: the file is empty (0 bytes); an empty file is often a failed write or copy.")
    return str(path)


def _from_array(array: Any, rate: float | None, label: str, limits: DecodeLimits) -> tuple[np.ndarray, float]:
    """Samples in memory -> (mono float32, rate): checks the rate, scales integer PCM, downmixes."""
    if rate is None:
        raise AudioError(f"{label}: an array needs its sampling rate; call load_audio(array, sampling_rate=...).")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate) or rate <= 0:
        raise AudioError(f"{label}: sampling rate must be a positive number of samples per second, got {rate!r}.")
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:  # resampling 1e-300 Hz would need all memory
        raise AudioError(f"{label}: sampling rate {rate!r} Hz is outside {limits.min_sample_rate} to "
                         f"{limits.max_sample_rate} Hz (DecodeLimits.min_sample_rate/max_sample_rate).")
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        array = (array.float() if array.is_floating_point() else array).numpy()  # numpy has no bfloat16
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        # Signed PCM is centred on 0; unsigned PCM (8-bit WAV) on its midpoint, 128 for uint8.
        middle = 0 if info.min < 0 else (info.max + 1) / 2
        array = (array.astype(np.float64) - middle) / (info.max + 1 - middle)
    elif not np.issubdtype(array.dtype, np.floating):
        raise AudioError(f"{label}: samples have dtype {array.dtype}; pass float or integer PCM samples.")
    if array.size == 0:
        array = array.reshape(0)  # reported as empty by _finish; averaging would make NaN of nothing
    elif array.ndim == 2:
        # No real clip has more channels than samples, so the shorter axis holds the channels.
        array = array.mean(axis=0 if array.shape[0] <= array.shape[1] else 1)
    elif array.ndim != 1:
        raise AudioError(f"{label}: expected 1-D samples or a 2-D channels x samples array, got shape {array.shape}.")
    return array.astype(np.float32), float(rate)  # astype copies: the caller's array is never aliased


def _finish(samples: np.ndarray, rate: float, label: str, limit_s: float, min_samples: int,
            max_seconds: float | None) -> np.ndarray:
    """Validate mono samples and resample them to SAMPLE_RATE. `limit_s` is the duration limit in force, the
    caller's `max_seconds` or the decode limits' when that is None or longer."""
    if samples.size == 0:
        raise AudioError(f"{label}: audio is empty (0 samples); pass a clip (an empty file is often a failed write).")
    if not np.isfinite(samples).all():
        bad = "NaN" if np.isnan(samples).any() else "inf"
        raise AudioError(
            f"{label}: audio contains {bad} samples; fix the step that produced them "
            "(often a division by zero while normalising) or clean them with np.nan_to_num."
        )
    seconds = samples.size / rate
    if seconds > limit_s:  # checked before resampling, which costs time
        which = "max_seconds" if max_seconds is not None and max_seconds <= limit_s else "DecodeLimits.max_seconds"
        raise AudioError(
            f"{label}: audio is {seconds:.2f} s long, over the limit of {which}={limit_s:g} s; "
            f"cut it with load_audio_segment or split_windows, or raise {which}."
        )
    if rate != SAMPLE_RATE:
        samples = soxr.resample(np.ascontiguousarray(samples), rate, SAMPLE_RATE, quality="HQ")
    if samples.size < min_samples:
        raise AudioError(
            f"{label}: audio is {samples.size / SAMPLE_RATE:.4f} s long ({samples.size} samples at 16 kHz), "
            f"shorter than the required {min_samples / SAMPLE_RATE:.4f} s ({min_samples} samples); "
            "pad it with silence or lower min_samples."
        )
    return samples.astype(np.float32, copy=False)
