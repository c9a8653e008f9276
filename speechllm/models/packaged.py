"""Models that ship inside the package, by name: `speechllm.load("default")`, `speechllm serve default gemma-bridge`.

A name stands for a folder under speechllm/resources/. An existing path of the same name wins over the packaged
name (as `speechllm train NAME` treats recipes): a folder the user can see is what they mean, and a name added to
this registry later never silently redirects a script that loads its own `./default` folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

RESOURCES = Path(__file__).parent.parent / "resources"


@dataclass(frozen=True)
class PackagedModel:
    """One shipped model: its folder, what it is (one line), and how to get it when the folder is missing."""

    folder: Path
    about: str
    install: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "default": PackagedModel(RESOURCES / "default_model",
                             "Whisper tiny.en with metadata adapters and attribute heads",
                             "reinstall speechllm"),
    "gemma-bridge": PackagedModel(RESOURCES / "gemma_bridge",
                                  "Whisper tiny.en transcripts bridged into Gemma 3 270M",
                                  "install a speechllm release that ships it, or train it with "
                                  "`speechllm train gemma_bridge` and pass its output folder"),
}


def packaged_model_names() -> list[str]:
    """The names `load` and `speechllm serve` accept for shipped models, in registry order."""
    return list(PACKAGED_MODELS)


def packaged_name(name_or_path) -> str | None:
    """The packaged model `name_or_path` stands for, or None: it must be a registered name, and no file or
    folder of that name may exist (an existing path wins)."""
    if not isinstance(name_or_path, (str, Path)):
        return None
    name = str(name_or_path)
    if name not in PACKAGED_MODELS or Path(name).expanduser().exists():
        return None
    return name


def packaged_model_path(name: str) -> Path:
    """The folder of a packaged model. ConfigError when the name is unknown (listing the names) or the folder is
    not installed (saying how to get it)."""
    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        raise ConfigError(f"no packaged model {name!r}; the packaged models are {packaged_model_names()}")
    if not (entry.folder / "config.json").is_file():
        raise ConfigError(f"the packaged model {name!r} ({entry.about}) is not installed: {entry.folder} holds no "
                          f"config.json; {entry.install}, or pass a model path")
    return entry.folder
