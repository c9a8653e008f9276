"""A template grammar that writes everyday English sentences with names, places, numbers, dates and times.

Templates and word classes live in resources/sentences/grammar.txt, names and places in names.json. Numbers
are written as words ("twenty-one", "half past seven", "four five five, two one nine"), because that is
what a speaker says and what a transcript of read speech holds.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

import numpy as np

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = "January February March April May June July August September October November December".split()


def number_words(n: int) -> str:
    """Cardinal number in words, British style "and" after hundreds: 342 -> "three hundred and forty-two"."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            joiner = "" if rest == 0 else (" and " if rest < 100 else " ")
            return number_words(n // size) + " " + name + joiner + ("" if rest == 0 else number_words(rest))
    raise AssertionError(n)


def ordinal_words(n: int) -> str:
    """Ordinal in words: 21 -> "twenty-first"."""
    words = number_words(n)
    head, sep, last = words.rpartition("-") if "-" in words.split()[-1] else words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def year_words(year: int) -> str:
    """How years are read: 1984 -> "nineteen eighty-four", 2005 -> "two thousand and five"."""
    if 2000 <= year < 2010:
        return number_words(year)
    high, low = divmod(year, 100)
    if low == 0:
        return number_words(high) + " hundred"
    return number_words(high) + (" oh " + _ONES[low] if low < 10 else " " + number_words(low))


def time_words(hour: int, minute: int, style: int) -> str:
    """Clock time in one of three spoken styles ("seven fifteen", "quarter past seven", "seven pm")."""
    h12 = hour % 12 or 12
    if style == 0:
        return number_words(h12) + (" o'clock" if minute == 0 else " oh " + _ONES[minute] if minute < 10
                                    else " " + number_words(minute))
    if style == 1 and minute in (0, 15, 30, 45):
        nxt = (hour + 1) % 12 or 12
        return {0: number_words(h12) + " o'clock", 15: "quarter past " + number_words(h12),
                30: "half past " + number_words(h12), 45: "quarter to " + number_words(nxt)}[minute]
    return number_words(h12) + ("" if minute == 0 else " " + number_words(minute)) + (" am" if hour < 12 else " pm")


class Grammar:
    """Fills the templates of grammar.txt; one `sentence(rng)` call draws one sentence."""

    def __init__(self, text: str, names: dict[str, list[str]]):
        self.classes: dict[str, list[list[str]]] = {}
        current = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = self.classes.setdefault(line[1:-1], [])
            elif current is not None:
                current.append([part.strip() for part in line.split("|")])
        self.templates = [t[0] for t in self.classes.pop("templates")]
        self.names = names

    def sentence(self, rng: np.random.Generator) -> str:
        """One sentence: a random template with every slot filled."""
        template = self.templates[rng.integers(len(self.templates))]
        text = re.sub(r"\{(\w+)\}", lambda m: self._fill(m.group(1), rng), template)
        return text[0].upper() + text[1:]

    def _pick(self, items: list, rng: np.random.Generator):
        return items[rng.integers(len(items))]

    def _fill(self, slot: str, rng: np.random.Generator) -> str:
        forms = {"nouns": ("noun", 1), "verbed": ("verb", 1), "verbing": ("verb", 2)}
        if slot in forms:
            name, index = forms[slot]
            return self._pick(self.classes[name], rng)[index]
        if slot in self.classes:
            return self._pick(self.classes[slot], rng)[0]
        if slot == "first":
            return self._pick(self.names["female" if rng.random() < 0.5 else "male"], rng)
        if slot == "name":
            first = self._fill("first", rng)
            return first + " " + self._pick(self.names["surname"], rng) if rng.random() < 0.6 else first
        if slot in self.names:
            return self._pick(self.names[slot], rng)
        return self._number(slot, rng)

    def _number(self, slot: str, rng: np.random.Generator) -> str:
        if slot == "number":
            return number_words(int(rng.choice([rng.integers(13, 100), rng.integers(100, 1000),
                                                 rng.integers(1000, 100000)])))
        if slot == "small":
            return number_words(int(rng.integers(2, 13)))
        if slot == "count":
            return number_words(int(rng.integers(2, 25)))
        if slot == "ordinal":
            return ordinal_words(int(rng.integers(1, 32)))
        if slot == "year":
            return year_words(int(rng.integers(1900, 2031)))
        if slot == "time":
            return time_words(int(rng.integers(0, 24)), int(rng.choice([0, 15, 30, 45, rng.integers(0, 60)])),
                              int(rng.integers(3)))
        if slot == "date":
            day, month = ordinal_words(int(rng.integers(1, 29))), self._pick(MONTHS, rng)
            return f"the {day} of {month}" if rng.random() < 0.5 else f"{month} the {day}"
        if slot == "day":
            return self._pick(DAYS, rng)
        if slot == "month":
            return self._pick(MONTHS, rng)
        if slot == "money":
            whole, cents = int(rng.integers(1, 500)), int(rng.integers(0, 100))
            unit = self._pick(["dollars", "pounds", "euros", "rupees", "shillings"], rng)
            return f"{number_words(whole)} {unit}" + (f" and {number_words(cents)} cents" if cents and unit != "rupees"
                                                      and unit != "shillings" and rng.random() < 0.5 else "")
        if slot == "phone":
            digits = [_ONES[int(d)] for d in rng.integers(0, 10, size=int(rng.integers(6, 11)))]
            return ", ".join(" ".join(digits[i:i + 3]) for i in range(0, len(digits), 3))
        if slot == "percent":
            return number_words(int(rng.integers(1, 100))) + " percent"
        if slot == "temperature":
            return number_words(int(rng.integers(-5, 41))) + " degrees"
        raise KeyError(f"grammar.txt uses an unknown slot {{{slot}}}")


@lru_cache(maxsize=1)
def default_grammar() -> Grammar:
    """The grammar shipped in speechllm/resources/sentences (parsed once per process)."""
    folder = resources.files("speechllm") / "resources" / "sentences"
    names = json.loads((folder / "names.json").read_text(encoding="utf-8"))
    return Grammar((folder / "grammar.txt").read_text(encoding="utf-8"), names)


def generate_sentences(count: int, seed: int = 0) -> list[str]:
    """`count` distinct grammar sentences, the same for the same seed (fewer only if the grammar runs dry)."""
    grammar, rng = default_grammar(), np.random.default_rng([seed, 7919])
    found: dict[str, None] = {}
    for _ in range(count * 3):
        if len(found) >= count:
            break
        found.setdefault(grammar.sentence(rng))
    return list(found)
