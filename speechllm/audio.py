"""Turn any audio input into what every encoder here expects: float32 mono samples at 16 kHz.

`load_audio` takes paths, encoded bytes, file objects, arrays, tensors and the Hugging Face datasets
shapes; it decodes, downmixes, resamples and validates, and every failure is an `AudioError` that names
the source, the problem and the fix. `load_conversation_audio` does it for every audio part of
conversations, before the processor (which takes waveforms only). `load_audio_segment` reads part of a long
file; `split_windows` and `pad_batch` cut and batch the result.

Decoding is libsndfile's, through soundfile: WAV, FLAC, OGG (Vorbis, Opus) and, from libsndfile 1.1,
MP3, with no ffmpeg, torchaudio or torchcodec needed.
"""

from __future__ import annotations

import io
import math
import numbers
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import soxr
import torch

from speechllm.errors import AudioError

SAMPLE_RATE = 16000

AudioInput = str | Path | bytes | BinaryIO | np.ndarray | torch.Tensor | tuple[np.ndarray, int] | dict[str, Any]

_REENCODE = "re-encode it, e.g. `ffmpeg -i IN -ac 1 -ar 16000 OUT.wav`"


def load_audio(
    source: AudioInput,
    sampling_rate: float | None = None,
    *,
    max_seconds: float | None = None,
    min_samples: int = 1,
    name: str | None = None,
) -> np.ndarray:
    """Decode, downmix, resample to 16 kHz and validate one clip.

    `source` is one of: a path to an audio file (wav, flac, ogg, mp3, ...); an encoded file's bytes or a
    binary file object; a numpy array or torch tensor, with `sampling_rate`; an `(array, sampling_rate)`
    tuple; a Hugging Face datasets dict, decoded (`{"array", "sampling_rate"}`) or not (`{"path", "bytes"}`).
    `sampling_rate` is required for bare arrays and ignored for encoded audio, which carries its own.

    Arrays are 1-D, or 2-D in either layout: they are averaged over the channel axis, taken to be the
    shorter one (axis 0, channels first, when both are equal). Integer PCM is scaled to [-1, 1].
    `name` replaces the source's description (path, "<bytes>", "<array>") in error messages.

    Returns a 1-D float32 array at SAMPLE_RATE. Raises AudioError when the file is missing or cannot be
    decoded, the input has the wrong type or rate, or the clip is empty, holds NaN or inf, is shorter than
    `min_samples` (counted at 16 kHz) or longer than `max_seconds`. Silence is valid.
    """
    label = name or _describe(source)
    samples, rate = _decode(source, sampling_rate, label)
    return _finish(samples, rate, label, max_seconds, min_samples)


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
) -> np.ndarray:
    """Read `duration_s` seconds (to the end when None) from `offset_s` of an audio file, decoding only that part.

    Returns a 1-D float32 array at SAMPLE_RATE, validated like `load_audio`. Raises AudioError when the
    segment does not lie inside the file.
    """
    label = name or str(path)
    samples, rate = _read_encoded(_existing_file(path, label), label, segment=(offset_s, duration_s))
    return _finish(samples, rate, label, max_seconds, min_samples)


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


def _decode(source: Any, sampling_rate: float | None, label: str) -> tuple[np.ndarray, float]:
    """Any accepted input -> (mono float32 samples, their rate)."""
    if isinstance(source, dict):
        if "array" in source:
            return _from_array(source["array"], _one_rate(source.get("sampling_rate"), sampling_rate, label), label)
        if source.get("bytes"):  # Audio(decode=False) keeps the bytes when it has them, else only the path
            return _read_encoded(io.BytesIO(source["bytes"]), label)
        if source.get("path"):
            return _read_encoded(_existing_file(source["path"], label), label)
        raise AudioError(
            f"{label}: an audio dict needs 'array' and 'sampling_rate', or 'path' or 'bytes'; got {sorted(source)}."
        )
    if isinstance(source, tuple):
        if len(source) != 2:
            raise AudioError(f"{label}: an audio tuple must be (array, sampling_rate), got {len(source)} items.")
        return _from_array(source[0], _one_rate(source[1], sampling_rate, label), label)
    if isinstance(source, (str, Path)):
        return _read_encoded(_existing_file(source, label), label)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_encoded(io.BytesIO(source), label)
    if hasattr(source, "read"):
        return _read_encoded(source, label)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return _from_array(source, sampling_rate, label)
    raise AudioError(
        f"{label}: cannot load audio from type {type(source).__name__}; pass a file path, encoded bytes, a binary "
        "file object, an array or tensor with sampling_rate, an (array, sampling_rate) tuple or a datasets audio dict."
    )


def _one_rate(carried: float | None, given: float | None, label: str) -> float | None:
    """The rate that travels with the array, unless the caller passed a different one too."""
    if carried is not None and given is not None and carried != given:
        raise AudioError(f"{label}: the input says {carried} Hz but sampling_rate={given}; pass only one.")
    return given if carried is None else carried


def _existing_file(path: str | Path, label: str) -> str:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{label}: audio file not found; check the path (relative paths start at {Path.cwd()}).")
    if not path.is_file():
        raise AudioError(f"{label}: is not a regular file; pass the path of an audio file.")
    if path.stat().st_size == 0:
        raise AudioError(f"{label}: the file is empty (0 bytes); an empty file is often a failed write or copy.")
    return str(path)


def _read_encoded(
    file: str | BinaryIO, label: str, segment: tuple[float, float | None] | None = None
) -> tuple[np.ndarray, float]:
    """Decode a path or binary file object, optionally only the (offset_s, duration_s) segment."""
    try:
        with sf.SoundFile(file) as f:
            start, frames = _segment_frames(segment, f.samplerate, f.frames, label) if segment else (0, -1)
            f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)
            rate = f.samplerate
    except sf.SoundFileError as e:
        # libsndfile's own words say what it disliked; the rest of its message is a repr of the file object.
        reason = getattr(e, "error_string", None) or str(e)
        if isinstance(file, str) and reason.startswith("File does not exist"):
            reason = "libsndfile could not open it"  # its words for a file it cannot parse, though the file exists
        raise AudioError(
            f"{label}: cannot decode as audio ({reason.rstrip('.')}); the file is damaged or not in a format "
            f"libsndfile reads (WAV, FLAC, OGG, MP3, ...): {_REENCODE}."
        ) from None
    return data.mean(axis=1), float(rate)  # soundfile gives (frames, channels)


def _segment_frames(segment: tuple[float, float | None], rate: int, total: int, label: str) -> tuple[int, int]:
    """Frame range (start, count) of an (offset_s, duration_s) segment, checked against the file's length."""
    offset_s, duration_s = segment
    for key, value in (("offset_s", offset_s), ("duration_s", duration_s)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not math.isfinite(value)):
            raise AudioError(f"{label}: {key} must be a finite number of seconds, got {value!r}.")
    if offset_s < 0 or (duration_s is not None and duration_s <= 0):
        raise AudioError(f"{label}: need offset_s >= 0 and duration_s > 0, got {offset_s} and {duration_s}.")
    start = round(offset_s * rate)
    frames = total - start if duration_s is None else round(duration_s * rate)
    if start >= total or start + frames > total:
        end = "the end" if duration_s is None else f"{offset_s + duration_s:.3f} s"
        raise AudioError(
            f"{label}: segment from {offset_s:.3f} s to {end} lies outside the file, which is {total / rate:.3f} s "
            "long; choose offset_s and duration_s within it."
        )
    return start, frames


def _from_array(array: Any, rate: float | None, label: str) -> tuple[np.ndarray, float]:
    """Samples in memory -> (mono float32, rate): checks the rate, scales integer PCM, downmixes."""
    if rate is None:
        raise AudioError(f"{label}: an array needs its sampling rate; call load_audio(array, sampling_rate=...).")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate) or rate <= 0:
        raise AudioError(f"{label}: sampling rate must be a positive number of samples per second, got {rate!r}.")
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


def _finish(samples: np.ndarray, rate: float, label: str, max_seconds: float | None, min_samples: int) -> np.ndarray:
    """Validate mono samples and resample them to SAMPLE_RATE."""
    if samples.size == 0:
        raise AudioError(f"{label}: audio is empty (0 samples); pass a clip (an empty file is often a failed write).")
    if not np.isfinite(samples).all():
        bad = "NaN" if np.isnan(samples).any() else "inf"
        raise AudioError(
            f"{label}: audio contains {bad} samples; fix the step that produced them "
            "(often a division by zero while normalising) or clean them with np.nan_to_num."
        )
    seconds = samples.size / rate
    if max_seconds is not None and seconds > max_seconds:  # checked before resampling, which costs time
        raise AudioError(
            f"{label}: audio is {seconds:.2f} s long, over the limit of max_seconds={max_seconds:g} s; "
            "cut it with load_audio_segment or split_windows, or raise max_seconds."
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
