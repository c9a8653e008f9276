"""Decoding encoded audio within a budget: what one clip may cost, checked before and while decoding.

An encoded file's cost is frames x channels, not seconds: a 98 KB Ogg of 255 channels of silence decodes to
gigabytes. `decode_encoded` therefore sniffs the container (only allowlisted ones reach libsndfile), reads the
header and refuses rates, channel counts and sample totals over `DecodeLimits` before decoding anything, then
decodes in blocks, downmixing each, and stops at the budget when the header lied or gave no length (streaming
FLAC). Peak memory is one block (`block_samples`) plus the mono output. At most `max_concurrent_decodes()`
decodes run at once in a process (the others wait), so a burst of uploads cannot multiply the peak.
"""

from __future__ import annotations

import io
import math
import numbers
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from .errors import AudioError

REENCODE = "re-encode it, e.g. `ffmpeg -i IN -ac 1 -ar 16000 OUT.wav`"
ALLOWED_FORMATS = ("wav", "flac", "ogg", "mp3")
FORMAT_ALIASES = {"wave": "wav", "x-wav": "wav", "vnd.wave": "wav", "x-flac": "flac", "oga": "ogg", "opus": "ogg",
                  "vorbis": "ogg", "mpeg": "mp3", "mpga": "mp3", "aif": "aiff", "aifc": "aiff", "snd": "au"}
_UNKNOWN_LENGTH = 2**62  # libsndfile reports 2**63-1 frames when the header gives no length (streaming FLAC)
_HEAD_BYTES = 12


@dataclass(frozen=True)
class DecodeLimits:
    """What decoding one clip may cost. The defaults fit speech at any common rate; raise them for other audio.

    The sample budget is the duration limit (the caller's `max_seconds`, capped by `max_seconds` here) times
    `max_samples_per_second` (frames x channels per second: 48 kHz x 8 channels, or 192 kHz stereo), so a clip
    within the duration limit passes at any rate and channel count the two maxima allow together."""

    max_sample_rate: int = 192_000
    min_sample_rate: int = 1_000
    max_channels: int = 8
    max_seconds: float = 3600.0  # the longest clip decoded when the caller gives no shorter max_seconds
    max_samples_per_second: int = 384_000
    formats: tuple[str, ...] = ALLOWED_FORMATS  # containers that reach libsndfile; others are refused unread
    block_samples: int = 1 << 20  # samples (frames x channels) decoded at a time: 4 MB of float32

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name != "formats" and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                            or not math.isfinite(value) or value <= 0):
                raise AudioError(f"DecodeLimits.{field.name} must be a positive number, got {value!r}.")
        if self.min_sample_rate > self.max_sample_rate:
            raise AudioError(f"DecodeLimits: min_sample_rate {self.min_sample_rate} is above max_sample_rate "
                             f"{self.max_sample_rate}.")
        formats = (self.formats,) if isinstance(self.formats, str) else self.formats  # "wav" is one name, not 3
        object.__setattr__(self, "formats", tuple(normalise_format(f) for f in formats))

    def duration_limit(self, max_seconds: float | None) -> float:
        """The seconds one clip may last: the caller's `max_seconds`, never more than `self.max_seconds`."""
        return self.max_seconds if max_seconds is None else min(max_seconds, self.max_seconds)

    def sample_budget(self, max_seconds: float | None) -> int:
        """Frames x channels one clip may hold under the duration limit."""
        return math.ceil(self.duration_limit(max_seconds) * self.max_samples_per_second)


# -- how many decodes run at once -------------------------------------------------------------------------
_slots_lock = threading.Lock()
_slots_size = 4
_slots = threading.BoundedSemaphore(_slots_size)


def set_max_concurrent_decodes(count: int) -> None:
    """Let at most `count` decodes run at once in this process (default 4); further callers wait their turn.
    Decodes already running finish under the old limit."""
    global _slots, _slots_size
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise AudioError(f"max concurrent decodes must be a whole number of at least 1, got {count!r}.")
    with _slots_lock:
        _slots, _slots_size = threading.BoundedSemaphore(count), count


def max_concurrent_decodes() -> int:
    """How many decodes may run at once in this process."""
    return _slots_size


# -- containers -------------------------------------------------------------------------------------------
def normalise_format(name: str) -> str:
    """A container name as this module spells it: lower case, aliases and MIME subtypes folded ('x-wav' -> 'wav')."""
    if not isinstance(name, str):
        raise AudioError(f"an audio format is a name such as 'wav', got {type(name).__name__}.")
    name = name.strip().lower().lstrip(".").rpartition("/")[2]
    return FORMAT_ALIASES.get(name, name)


def sniff_format(head: bytes) -> str | None:
    """The container named by a file's first bytes ('wav', 'flac', 'ogg', 'mp3', 'aiff', 'au', ...), or None."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    # MPEG audio: an ID3 tag, or a frame sync (11 set bits) with a layer (bits 1-2 of byte 1) that is not 0 (AAC).
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "mp3"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b".snd":
        return "au"
    for magic, name in ((b"caff", "caf"), (b"riff", "w64"), (b"\x1aE\xdf\xa3", "webm/matroska"), (b"ftyp", "mp4/m4a"),
                        (b"wvpk", "wavpack"), (b"MThd", "midi"), (b"2BIT", "avr"), (b"Creative Voice", "voc")):
        if magic in head[:12]:
            return name
    return None


def check_format(head: bytes, label: str, declared: str | None = None,
                 allowed: tuple[str, ...] = ALLOWED_FORMATS) -> str:
    """The container of bytes starting with `head`, when it is allowed and matches `declared` (if given);
    AudioError naming both otherwise. Nothing is parsed beyond the magic bytes."""
    found = sniff_format(head)
    what = found.upper() if found else "no audio container this decoder knows"
    if declared is not None:
        name = normalise_format(declared)
        if name not in allowed:
            raise AudioError(f"{label}: audio format {declared!r} is not allowed; use one of {list(allowed)}: "
                             f"{REENCODE}.")
        if found != name:
            raise AudioError(f"{label}: declared as {name.upper()}, but the bytes are {what}; declare the format "
                             f"the bytes really have, or {REENCODE}.")
        return name
    if found not in allowed:
        raise AudioError(f"{label}: cannot decode as audio: the bytes are {what}, not one of "
                         f"{'/'.join(f.upper() for f in allowed)}; {REENCODE}.")
    return found


def _opened_with_head(file: str | BinaryIO, label: str) -> tuple[bytes, str | BinaryIO]:
    """(first bytes, the file ready to decode from where it was) of a path or binary file object."""
    if isinstance(file, str):
        with open(file, "rb") as f:
            return f.read(_HEAD_BYTES), file
    try:
        seekable = file.seekable() if hasattr(file, "seekable") else False
        if not seekable:  # libsndfile seeks; keep what was read in memory instead
            file = io.BytesIO(file.read())
        position = file.tell()
        head = file.read(_HEAD_BYTES)
        file.seek(position)
    except (OSError, ValueError, TypeError) as e:
        raise AudioError(f"{label}: cannot read the file object ({e}); pass a binary file opened with 'rb'.") from None
    if not isinstance(head, bytes):
        raise AudioError(f"{label}: the file object gives {type(head).__name__}, not bytes; open it with 'rb'.")
    return head, file


# -- decoding ---------------------------------------------------------------------------------------------
class _ForwardReader(sf.SoundFile):
    """A SoundFile that reads forwards only. soundfile seeks back to its own count after every read of a
    seekable file, and that seek fails on the last block of a FLAC stream whose header gives no length."""

    def seekable(self) -> bool:
        return False


def decode_encoded(file: str | Path | BinaryIO, label: str, limits: DecodeLimits, *, max_seconds: float | None = None,
                   segment: tuple[float, float | None] | None = None,
                   declared: str | None = None) -> tuple[np.ndarray, float]:
    """(mono float32 samples, rate) of a path or binary file object, optionally only its (offset_s, duration_s)
    `segment`, within `limits` and the caller's `max_seconds`. AudioError when the container is not allowed or
    not `declared`, the header's rate, channels or length are over the limits, or the bytes do not decode."""
    head, file = _opened_with_head(str(file) if isinstance(file, Path) else file, label)
    check_format(head, label, declared, limits.formats)
    with _slots:
        try:
            with _ForwardReader(file) as f:
                return _read_mono(f, label, limits, max_seconds, segment), float(f.samplerate)
        except sf.SoundFileError as e:
            # libsndfile's own words say what it disliked; the rest of its message is a repr of the file object.
            reason = getattr(e, "error_string", None) or str(e)
            if isinstance(file, str) and reason.startswith("File does not exist"):
                reason = "libsndfile could not open it"  # its words for a file it cannot parse, though the file exists
            raise AudioError(
                f"{label}: cannot decode as audio ({reason.rstrip('.')}); the file is damaged or not in a format "
                f"libsndfile reads (WAV, FLAC, OGG, MP3, ...): {REENCODE}."
            ) from None


def _read_mono(f: sf.SoundFile, label: str, limits: DecodeLimits, max_seconds: float | None,
               segment: tuple[float, float | None] | None) -> np.ndarray:
    rate, channels = f.samplerate, f.channels
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise AudioError(f"{label}: the header says {rate} Hz; clips are decoded at {limits.min_sample_rate} to "
                         f"{limits.max_sample_rate} Hz (DecodeLimits.min_sample_rate/max_sample_rate): {REENCODE}.")
    if channels > limits.max_channels:
        raise AudioError(f"{label}: the header says {channels} channels; at most {limits.max_channels} are decoded "
                         f"(DecodeLimits.max_channels): {REENCODE}.")
    total = f.frames if 0 < f.frames < _UNKNOWN_LENGTH else None  # None: read to the end to know
    start, count = segment_frames(segment, rate, total, label) if segment else (0, total)
    budget = min(math.floor(limits.duration_limit(max_seconds) * rate), limits.sample_budget(max_seconds) // channels)
    if count is not None and count > budget:
        raise _over_budget(label, count, rate, channels, limits, max_seconds)
    if start:
        f.seek(start)
    wanted = budget + 1 if count is None else count  # one frame past the budget shows a lying header
    blocks, got, block_frames = [], 0, max(1, limits.block_samples // channels)
    while got < wanted:
        block = f.read(min(block_frames, wanted - got), dtype="float32", always_2d=True)
        if not len(block):
            break
        blocks.append(block.mean(axis=1, dtype=np.float32) if channels > 1 else block[:, 0].copy())
        got += len(block)
    if got > budget:
        raise _over_budget(label, got, rate, channels, limits, max_seconds, at_least=True)
    if segment and count is None and got == 0:
        raise AudioError(f"{label}: segment from {segment[0]:.3f} s lies outside the file; choose offset_s within it.")
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def _over_budget(label: str, frames: int, rate: int, channels: int, limits: DecodeLimits, max_seconds: float | None,
                 at_least: bool = False) -> AudioError:
    seconds, more = frames / rate, "over " if at_least else ""
    limit = limits.duration_limit(max_seconds)
    if seconds > limit:
        which = f"max_seconds={max_seconds:g}" if max_seconds is not None and max_seconds <= limits.max_seconds \
            else f"DecodeLimits.max_seconds={limits.max_seconds:g}"
        return AudioError(f"{label}: audio is {more}{seconds:.2f} s long, over the limit of {which} s; cut it with "
                          "load_audio_segment or split_windows, or raise the limit.")
    return AudioError(
        f"{label}: audio holds {more}{frames * channels} samples ({frames} frames x {channels} channels at {rate} Hz), "
        f"over the decode budget of {limits.sample_budget(max_seconds)} for {limit:g} s "
        f"(DecodeLimits.max_samples_per_second={limits.max_samples_per_second}): {REENCODE}.")


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 1e9 else f"{value:.3g}"  # 1e308 s in full would be 300 digits


def segment_frames(segment: tuple[float, float | None], rate: int, total: int | None,
                   label: str) -> tuple[int, int | None]:
    """Frame range (start, count) of an (offset_s, duration_s) segment, checked against the file's length
    (`total` frames; None when the header does not say, and count is then None when reading to the end)."""
    offset_s, duration_s = segment
    for key, value in (("offset_s", offset_s), ("duration_s", duration_s)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not math.isfinite(value)):
            raise AudioError(f"{label}: {key} must be a finite number of seconds, got {value!r}.")
    if offset_s < 0 or (duration_s is not None and duration_s <= 0):
        raise AudioError(f"{label}: need offset_s >= 0 and duration_s > 0, got {offset_s} and {duration_s}.")
    if total is not None:
        length = total / rate  # compared in seconds first: a huge duration_s would overflow a frame count
        end = offset_s if duration_s is None else offset_s + duration_s
        if offset_s >= length or end > length + 0.5 / rate:
            shown = "the end" if duration_s is None else f"{_seconds(end)} s"
            raise AudioError(
                f"{label}: segment from {_seconds(offset_s)} s to {shown} lies outside the file, which is "
                f"{length:.3f} s long; choose offset_s and duration_s within it."
            )
    if (offset_s + (duration_s or 0)) * rate >= _UNKNOWN_LENGTH:  # 1e308 s would overflow a frame count
        raise AudioError(f"{label}: offset_s={offset_s!r} and duration_s={duration_s!r} reach past any audio file; "
                         "choose a segment within the file.")
    start = round(offset_s * rate)
    if duration_s is None:
        return start, None if total is None else total - start
    frames = round(duration_s * rate)
    if total is not None and start + frames > total:
        raise AudioError(f"{label}: segment from {offset_s:.3f} s to {offset_s + duration_s:.3f} s lies outside the "
                         f"file, which is {total / rate:.3f} s long; choose offset_s and duration_s within it.")
    return start, frames


def header_frames(info_frames: int) -> int | None:
    """The frame count a header gives, or None when it gives none (libsndfile's 2**63-1: a streaming FLAC)."""
    return info_frames if 0 <= info_frames < _UNKNOWN_LENGTH else None


def counted_seconds(file: str | BinaryIO, label: str, limits: DecodeLimits | None = None) -> float:
    """A clip's length found by decoding it block by block, for headers that give none; nothing is kept.
    Stops past `limits.max_seconds` (the length returned is then over it). AudioError when it does not decode."""
    limits = limits or DecodeLimits()
    head, file = _opened_with_head(file, label)
    check_format(head, label, None, limits.formats)
    with _slots:
        try:
            with _ForwardReader(file) as f:
                if f.channels > limits.max_channels or not limits.min_sample_rate <= f.samplerate <= \
                        limits.max_sample_rate:
                    raise AudioError(f"{label}: the header says {f.samplerate} Hz and {f.channels} channels, over "
                                     f"the decode limits; {REENCODE}.")
                budget, frames = math.floor(limits.max_seconds * f.samplerate) + 1, 0
                block_frames = max(1, limits.block_samples // f.channels)
                while frames < budget:
                    got = len(f.read(min(block_frames, budget - frames), dtype="float32", always_2d=True))
                    if not got:
                        break
                    frames += got
                return frames / f.samplerate
        except sf.SoundFileError as e:
            raise AudioError(f"{label}: cannot decode as audio ({getattr(e, 'error_string', None) or e})") from None
