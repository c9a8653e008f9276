"""Maintainer tool: rebuild the word lists and quotes under speechllm/resources/sentences/.

Not needed to build a corpus (the files are committed); run it only to refresh them:

    apt-get install -y fortunes fortunes-min     # BSD-licensed fortune cookie files (Debian)
    pip install --target /tmp/faker faker       # MIT-licensed name and place lists (PyPI)
    PYTHONPATH=/tmp/faker python -m speechllm.data.synth.make_sentences

`quotes.txt` keeps one-line sentences of 4-25 plain words from chosen fortune files (categories that are
mostly jokes about groups of people, drugs or politics are left out, and a blocklist drops the rest);
`names.json` holds first names by gender, surnames, cities, jobs and common words from several Faker
locales, so that the grammar's sentences name people and places from every accent region.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)
RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "sentences"
FORTUNES = Path("/usr/share/games/fortunes")
CATEGORIES = (
    "fortunes wisdom people food education science work pets platitudes kids miscellaneous computers goedel "
    "songs-poems paradoxum art cookie magic medicine news sports law literature humorists zippy love"
).split()
_BLOCK = re.compile(
    r"\b(sex\w*|kill\w*|god|jesus|christ|hell|damn\w*|drunk\w*|beer|whisk\w*|naked|nude|breast\w*|bitch\w*|"
    r"bastard\w*|shit\w*|fuck\w*|ass|whore\w*|virgin\w*|rape\w*|suicide|murder\w*|dead|death|die|dies|died|"
    r"gun\w*|war|wars|nazi\w*|jew\w*|negro\w*|gay|lesbian\w*|wife|wives|husband\w*|women|woman|girl\w*|"
    r"pregnan\w*|bed|beds|drug\w*|pot|stoned|marijuana|president\w*|congress|republican\w*|democrat\w*)\b",
    re.IGNORECASE,
)
_PLAIN = re.compile(r"[A-Z][A-Za-z ,.;!?'-]+[.!?]")
LOCALES = ["en_US", "en_GB", "en_IE", "en_NZ", "en_IN", "en_PK", "en_KE", "sw", "id_ID", "en_TH"]


def quotes() -> list[str]:
    """One-sentence, plain-word quotes from the installed fortune files."""
    found = []
    for category in CATEGORIES:
        path = FORTUNES / category
        if not path.exists():
            continue
        for entry in path.read_text(encoding="latin-1").split("\n%\n"):
            text = re.sub(r"\s+", " ", entry).strip()
            # Attributions, dialogue, digits, acronyms and ASCII art make poor read speech.
            if re.search(r"--|:|[0-9@#$&*_=<>{}\[\]|/\\~^()\"]|[A-Z]{2,}|\.\.|!!|\?\?", text):
                continue
            for sentence in re.split(r"(?<=[.!?])\s+", text):
                words = sentence.split()
                if 4 <= len(words) <= 25 and _PLAIN.fullmatch(sentence) and not _BLOCK.search(sentence):
                    found.append(sentence)
    return sorted(set(found))


def names() -> dict[str, list[str]]:
    """Name, place, job and word lists from Faker's locale providers."""
    plain = re.compile(r"[A-Z][a-z]+(?:[ -][A-Z][a-z]+)?")

    def pick(module: str, attribute: str) -> list[str]:
        try:
            value = getattr(importlib.import_module(module).Provider, attribute, None)
        except ModuleNotFoundError:
            return []
        if isinstance(value, dict):  # some locales weight names: {name: frequency}
            value = list(value)
        return [v for v in value or [] if plain.fullmatch(v)]

    lists: dict[str, set[str]] = {k: set() for k in ("female", "male", "surname", "city")}
    for locale in LOCALES:
        lists["female"].update(pick(f"faker.providers.person.{locale}", "first_names_female"))
        lists["male"].update(pick(f"faker.providers.person.{locale}", "first_names_male"))
        lists["surname"].update(pick(f"faker.providers.person.{locale}", "last_names"))
        for attribute in ("cities", "city_names"):
            lists["city"].update(pick(f"faker.providers.address.{locale}", attribute))
    ambiguous = lists["female"] & lists["male"]
    result = {k: sorted(v - ambiguous if k in ("female", "male") else v) for k, v in lists.items()}
    jobs = importlib.import_module("faker.providers.job.en_US").Provider.jobs
    result["job"] = sorted({j.lower() for j in jobs if re.fullmatch(r"[A-Za-z ]+", j) and len(j.split()) <= 3})
    words = importlib.import_module("faker.providers.lorem.en_US").Provider.word_list
    result["word"] = sorted({w for w in words if re.fullmatch(r"[a-z]{3,}", w)})
    return result


def main() -> None:
    RESOURCES.mkdir(parents=True, exist_ok=True)
    lines = quotes()
    (RESOURCES / "quotes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lists = names()
    (RESOURCES / "names.json").write_text(json.dumps(lists, indent=0) + "\n", encoding="utf-8")
    log.info("%d quotes; %s", len(lines), ", ".join(f"{k} {len(v)}" for k, v in lists.items()))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
