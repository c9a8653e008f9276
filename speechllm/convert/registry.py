"""The converters, by the name of the project whose checkpoints they read
(`speechllm convert SOURCE OUT --from NAME`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError


@dataclass(frozen=True)
class Converter:
    """One project's converter: `convert(source, out, **options)` writes a speechllm model folder and returns the model;
    `released_prompt(instruction)` is the prompt that project's own inference code builds (see released.py)."""

    name: str
    convert: Callable
    released_prompt: Callable
    summary: str


CONVERTERS: dict[str, Converter] = {}


def register_converter(name: str, *, released_prompt: Callable, summary: str) -> Callable:
    def register(convert):
        CONVERTERS[name] = Converter(name, convert, released_prompt, summary)
        return convert

    return register


def converter(name: str) -> Converter:
    """The converter registered as `name`; ConfigError naming the known ones otherwise."""
    if name not in CONVERTERS:
        raise ConfigError(f"no converter for {name!r}; known: {sorted(CONVERTERS)}")
    return CONVERTERS[name]
