"""Sentences to read, from two offline sources, split into train/dev/test by a hash of the sentence.

Sources: "quotes" (about 3,300 one-line sayings and jokes from Debian's BSD-licensed fortune files,
committed as resources/sentences/quotes.txt) and "grammar" (template sentences with names, places,
numbers, dates and times from `grammar`, as many as the corpus needs). The split of a sentence depends
only on its normalised text, so a sentence is in one split whatever the seed, corpus size or source:
no test sentence is ever read in training.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from importlib import resources

import numpy as np

from speechllm.data.synth.grammar import generate_sentences
from speechllm.errors import ConfigError

SPLITS = ("train", "dev", "test")


def normalize(sentence: str) -> str:
    """Lower case, letters, digits and apostrophes only, single spaces: the key for splits and duplicates."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", sentence.lower()).split())


def split_of(sentence: str, fractions: tuple[float, float, float]) -> str:
    """"train", "dev" or "test" for this sentence, from a hash of its normalised text (stable across runs)."""
    digest = hashlib.sha256(normalize(sentence).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1]


def check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    """Validate (train, dev, test) fractions: three non-negative numbers summing to 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1) > 1e-6:
        raise ConfigError(
            f"splits must be three non-negative fractions (train, dev, test) summing to 1, got {fractions}"
        )
    return values


@lru_cache(maxsize=1)
def load_quotes() -> tuple[str, ...]:
    """The committed quotes, one sentence each."""
    path = resources.files("speechllm") / "resources" / "sentences" / "quotes.txt"
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


class SentencePool:
    """Sentences of every source, grouped by split, handed out without repeats until a group runs out.

    `grammar_count` sets how many grammar sentences to generate (the corpus passes its utterance count,
    so larger corpora get more distinct sentences). Each `draw` alternates sources at random, half and
    half, because the quotes are natural prose and the grammar covers names, numbers and dates.
    """

    def __init__(self, fractions: tuple[float, float, float], grammar_count: int, seed: int = 0):
        self.fractions = check_fractions(fractions)
        sources = {"quotes": list(load_quotes()), "grammar": generate_sentences(grammar_count, seed)}
        rng = np.random.default_rng([seed, 104729])
        self.groups: dict[tuple[str, str], list[str]] = {}
        seen: set[str] = set()
        for source, sentences in sources.items():
            for sentence in sentences:
                key = normalize(sentence)
                if key in seen:
                    continue
                seen.add(key)
                self.groups.setdefault((source, split_of(sentence, self.fractions)), []).append(sentence)
        for group in self.groups.values():
            rng.shuffle(group)
        self._next = {key: 0 for key in self.groups}

    def draw(self, split: str, rng: np.random.Generator) -> tuple[str, str]:
        """(sentence, source) for `split`: the next unused sentence of a randomly chosen source."""
        sources = [s for s in ("quotes", "grammar") if self.groups.get((s, split))]
        if not sources:
            raise ConfigError(f"no sentence falls in the {split!r} split; give it a larger fraction")
        source = sources[int(rng.integers(len(sources)))]
        group, key = self.groups[(source, split)], (source, split)
        # Cycling (rather than sampling with replacement) maximises distinct sentences per corpus.
        sentence = group[self._next[key] % len(group)]
        self._next[key] += 1
        return sentence, source

    def sizes(self) -> dict[str, dict[str, int]]:
        """How many distinct sentences each split holds, by source."""
        return {split: {s: len(self.groups.get((s, split), [])) for s in ("quotes", "grammar")} for split in SPLITS}
