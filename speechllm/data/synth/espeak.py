"""espeak-ng voices: native English accents, plus foreign accents made by respelling (see `accents`).

Every language voice is combined with espeak's voice variants (+m1..+m8 male, +f1..+f5 and three named
female variants), whose pitch and formant settings define the speaker's gender. One call costs one
`espeak-ng` process (~40 ms with start-up), or two for respelled accents (phonemes, then speech).
"""

from __future__ import annotations

import functools
import shutil
import subprocess

import numpy as np

from speechllm.data.synth.accents import RESPELLINGS, respell
from speechllm.data.synth.voices import Backend, Voice, register_backend, to_16k
from speechllm.errors import ConfigError

# (espeak language voice, accent label, what it is)
LANGUAGES = [
    ("en-us", "America", "General American English"),
    ("en-us-nyc", "America", "New York City English"),
    # Caribbean English: the Caribbean lies in the Americas and the label set has no Caribbean class.
    ("en-029", "America", "Caribbean English"),
    # England is labelled Europe, as in the seed's accent grouping; Scotland, Ireland and Wales are Celtic.
    ("en-gb", "Europe", "Southern British English"),
    ("en-gb-x-rp", "Europe", "Received Pronunciation"),
    ("en-gb-x-gbclan", "Europe", "Lancastrian English"),
    ("en-gb-x-gbcwmd", "Europe", "West Midlands English"),
    ("en-gb-scotland", "Celtic", "Scottish English"),
    # Respelled foreign accents (see accents.py). Nepali, Marathi and Spanish voices were tried and dropped:
    # Whisper tiny.en misheard them twice as often as these (WER ~1.0 against 0.5-0.9).
    ("hi", "South-Asia", "English respelled in Devanagari, Hindi voice"),
    ("sw", "Africa", "English respelled in Swahili spelling, Swahili voice"),
    ("id", "South-East-Asia", "English respelled in Indonesian spelling, Indonesian voice"),
    ("ms", "South-East-Asia", "English respelled in Malay spelling, Malay voice"),
]
# Variants whose files say "gender male/female"; whisper, robot and character variants are left out.
MALE_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"]
FEMALE_VARIANTS = ["f1", "f2", "f3", "f4", "f5", "Annie", "linda", "steph"]

_BINARY = "espeak-ng"
_TIMEOUT_S = 60


@register_backend
class EspeakBackend(Backend):
    """espeak-ng through its command line (`apt-get install espeak-ng`)."""

    name = "espeak"

    def available(self) -> bool:
        return shutil.which(_BINARY) is not None

    def voices(self) -> list[Voice]:
        if not self.available():
            return []
        installed = self._installed_languages()
        found = []
        for language, accent, description in LANGUAGES:
            if language not in installed:
                continue
            for gender, variants in (("Male", MALE_VARIANTS), ("Female", FEMALE_VARIANTS)):
                for variant in variants:
                    found.append(Voice(
                        id=f"espeak:{language}+{variant}",
                        backend=self.name,
                        gender=gender,
                        accent=accent,
                        params={"language": language, "variant": variant},
                        description=description,
                    ))
        return found

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> np.ndarray:
        language, variant = voice.params["language"], voice.params["variant"]
        # Prosody drawn per utterance: speaking rate (words a minute) and pitch (0-99, variant-relative);
        # the pitch range is kept near the middle so a male variant never sounds female or the reverse.
        rate = int(rng.integers(135, 196))
        pitch = int(rng.integers(35, 66))
        if language in RESPELLINGS:
            source = RESPELLINGS[language].source
            text = respell(self._run(["-q", "--ipa", "-v", source], text).decode("utf-8").splitlines(), language)
        voice_file = self._voice_files().get(language, language)
        wav = self._run(["--stdout", "-v", f"{voice_file}+{variant}", "-s", str(rate), "-p", str(pitch)], text)
        return to_16k(*_pcm_from_wav(wav))

    @staticmethod
    def _run(args: list[str], text: str) -> bytes:
        # Text goes through stdin so that a sentence starting with "-" is never read as an option.
        done = subprocess.run([_BINARY, *args], input=text.encode("utf-8"), capture_output=True, timeout=_TIMEOUT_S)
        if done.returncode != 0:
            raise ConfigError(f"espeak-ng {' '.join(args)} failed: {done.stderr.decode(errors='replace')[-300:]}")
        return done.stdout

    @staticmethod
    @functools.cache
    def _voice_listing() -> tuple[tuple[str, ...], ...]:
        """The rows of `espeak-ng --voices` (priority, language, gender, name, file, ...), read once."""
        listing = subprocess.run([_BINARY, "--voices"], capture_output=True, timeout=_TIMEOUT_S).stdout.decode()
        return tuple(tuple(line.split()) for line in listing.splitlines()[1:] if len(line.split()) > 1)

    @classmethod
    def _installed_languages(cls) -> set[str]:
        return {row[1] for row in cls._voice_listing()}

    @classmethod
    def _voice_files(cls) -> dict[str, str]:
        """Each language's espeak-ng voice file (e.g. en-gb -> gmw/en). Naming the file, not the language, matters:
        `-v en-gb+f3` resolves to an MBROLA voice that ignores variants, so every en-gb "variant" was the same
        male voice; `-v gmw/en+f3` applies the variant. MBROLA voices (mb/...) are skipped for the same reason."""
        files = {}
        for row in cls._voice_listing():
            if len(row) >= 5 and not row[4].startswith("mb/"):
                files.setdefault(row[1], row[4])
        return files


def _pcm_from_wav(wav: bytes) -> tuple[np.ndarray, int]:
    # espeak-ng --stdout streams a WAV whose size fields are placeholders, so soundfile cannot be trusted
    # with it; the rate sits at byte 24 of the header, the 16-bit mono PCM after the "data" chunk header.
    start = wav.find(b"data")
    if not wav.startswith(b"RIFF") or start < 0:
        raise ConfigError("espeak-ng wrote no audio (no WAV data chunk); is the voice installed?")
    rate = int.from_bytes(wav[24:28], "little")
    pcm = wav[start + 8:]
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
    return samples.astype(np.float32) / 32768.0, rate
