"""The values spoken passages state (names, cities, streets, times, prices, rooms, dates...), held out by split.

Every pool is cut once, by a hash of `pool:value`, into train (80%), dev (10%) and test (10%) parts that do not
depend on the seed or the corpus size: a test passage only ever states names, cities, venues, times, prices,
rooms and dates that no training passage of any build states, so a model cannot answer from memorised values.
Days of the week, months, relatives ("sister") and kinds of building ("library") are words rather than facts, too
few to hold out, and shared by all splits (the dates built from days and months are held out).

Numbers are written in words, as every transcript of the synthetic corpora is ("seven forty-five",
"twelve dollars and fifty cents"), so an answer is a span of the words the voice reads.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources

import numpy as np

from speechllm.data.synth.grammar import DAYS, MONTHS, number_words, ordinal_words, time_words
from speechllm.errors import ConfigError

VALUE_SPLITS = {"train": 0.8, "dev": 0.1, "test": 0.1}
SHARED_POOLS = ("day", "month", "relative", "building")  # too few values, or words, not facts


# Pools of proper names: a name is owned by one split whatever pool it comes from ("Reed" the surname and
# "Reed Street"), by a hash of its first word. Other pools are cut by the rank of each value's hash, so a small
# pool (eleven head counts) still gives every split its share.
NAME_POOLS = ("female", "male", "surname", "city", "street", "venue")
# Small numbers serve several pools ("platform thirty", "thirty minutes"): one owner per number, ranked over all.
NUMBER_POOLS = ("platform", "line", "minutes", "count")


def _unit_hash(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def _split_at(u: float) -> str:
    edge = 0.0
    for split, fraction in VALUE_SPLITS.items():
        edge += fraction
        if u < edge:
            return split
    return "test"


def value_split(pool: str, value: str) -> str:
    """The split that owns `value` of `pool` ("train", "dev" or "test"): a stable hash, not a draw; "all" for the
    shared pools."""
    if pool in SHARED_POOLS:
        return "all"
    if pool in NAME_POOLS:
        return _split_at(_unit_hash(value.split()[0]))
    ranks = _ranks("numbers" if pool in NUMBER_POOLS else pool)
    return _split_at((ranks[value] + 0.5) / len(ranks))


@functools.cache
def _ranks(pool: str) -> dict[str, int]:
    pools = value_pools()
    values = {v for name in NUMBER_POOLS for v in pools[name]} if pool == "numbers" else pools[pool]
    ranked = sorted(values, key=lambda v: _unit_hash(f"{pool}:{v}"))
    return {value: rank for rank, value in enumerate(ranked)}


def _plain(words: list[str], longest: int = 10) -> list[str]:
    """Single words of letters only (no hyphens or accents), which every voice reads as written; never a day or
    a month ("May"), which every split says."""
    return sorted({w for w in words if w.isascii() and w.isalpha() and 3 <= len(w) <= longest} - set(DAYS + MONTHS))


def _prices() -> list[str]:
    prices = []
    for dollars in range(2, 200):
        for cents in (0, 25, 50, 75, 99):
            text = number_words(dollars) + " dollars"
            prices.append(text if cents == 0 else f"{text} and {number_words(cents)} cents")
    return prices


def _times() -> list[str]:
    times = set()
    for hour in range(6, 22):
        for minute in range(0, 60, 5):
            if minute == 0 or minute >= 10:  # "seven five am" is not how a time is said
                times.add(time_words(hour, minute, 2))  # "seven forty-five am", "nine pm"
            if minute:
                times.add(time_words(hour, minute, 0))  # "seven forty-five", "seven oh five"
    return sorted(times)


@functools.cache
def value_pools() -> dict[str, tuple[str, ...]]:
    """Every pool, whole (all splits), sorted: pool name -> values."""
    names = json.loads(resources.files("speechllm").joinpath("resources", "sentences", "names.json")
                       .read_text(encoding="utf-8"))
    extra = json.loads(resources.files("speechllm").joinpath("resources", "passages", "values.json")
                       .read_text(encoding="utf-8"))
    pools = {
        "female": _plain(names["female"]), "male": _plain(names["male"]), "surname": _plain(names["surname"], 12),
        "city": sorted(set(_plain(names["city"], 12)) | set(extra["city"])),
        "street": [f"{name} {kind}" for name in _plain(names["surname"], 9)[::7] for kind in extra["street_kind"]],
        "venue": [f"{word} {kind}" for word in extra["venue_word"] for kind in extra["venue_kind"]],
        "item": extra["item"], "topic": extra["topic"], "event": extra["event"], "building": extra["building"],
        "document": extra["document"], "relative": extra["relative"],
        "room": [number_words(n) for n in range(100, 600)],
        "platform": [number_words(n) for n in range(1, 40)],
        "line": [number_words(n) for n in range(2, 99)],
        "count": [number_words(n) for n in range(2, 21)],
        "crowd": [number_words(n * 100) for n in range(3, 100)],
        "minutes": [number_words(n) for n in range(5, 95, 5)],
        "price": _prices(), "time": _times(),
        "date": [f"{month} {ordinal_words(day)}" for month in MONTHS for day in range(1, 29)],
        "day": list(DAYS), "month": list(MONTHS),
    }
    return {name: tuple(sorted(set(values))) for name, values in pools.items()}


@functools.cache
def split_pool(pool: str, split: str) -> tuple[str, ...]:
    """The values of `pool` that passages of `split` may state."""
    pools = value_pools()
    if pool not in pools:
        raise ConfigError(f"unknown value pool {pool!r}; pools: {sorted(pools)}")
    if split not in VALUE_SPLITS:
        raise ConfigError(f"unknown split {split!r}; splits: {list(VALUE_SPLITS)}")
    return tuple(v for v in pools[pool] if value_split(pool, v) in (split, "all"))


class ValueDraw:
    """Draws the values of one passage: from its split's part of each pool, never the same value twice in one
    passage (so a question that names one entity has one answer), deterministic for a generator state."""

    def __init__(self, split: str, rng: np.random.Generator):
        self.split, self.rng = split, rng
        self.used: set[str] = set()

    def __call__(self, pool: str) -> str:
        values = split_pool(pool, self.split)
        fresh = [v for v in values if v not in self.used] or list(values)  # a long passage may use up 7 days
        value = fresh[int(self.rng.integers(len(fresh)))]
        self.used.add(value)
        return value

    def choice(self, options):
        """One of `options` (phrasings, variants), drawn from the passage's generator."""
        return options[int(self.rng.integers(len(options)))]
