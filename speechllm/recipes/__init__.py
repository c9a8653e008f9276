"""Training recipes shipped inside the package, so `speechllm train default` works from any folder and any install.

    speechllm train tiny stages.0.steps=2     # a packaged recipe, by name
    speechllm train my/recipe.yaml            # a file of your own (start from a copy of a packaged one)

`default` rebuilds the default model, `tiny` is the tests' seconds-long CPU recipe, `replica_*` are the seed systems.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from speechllm.errors import ConfigError


def recipe_names() -> list[str]:
    """The names of the packaged recipes (their file names without .yaml), sorted."""
    return sorted(entry.name[: -len(".yaml")] for entry in resources.files(__name__).iterdir()
                  if entry.name.endswith(".yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: `name_or_path` itself when it exists, else the packaged recipe of that name ("tiny" or
    "tiny.yaml"). ConfigError naming the packaged recipes when it is neither."""
    path = Path(name_or_path)
    if path.exists():
        return path
    name = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") and name in recipe_names():
        # A regular package on disk (wheel or checkout), so the resource is a real file.
        return Path(str(resources.files(__name__) / f"{name}.yaml"))
    raise ConfigError(f"recipe {name_or_path} not found: not a file, nor a packaged recipe "
                      f"({', '.join(recipe_names())})")
