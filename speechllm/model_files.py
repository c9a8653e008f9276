"""Opening model folders the package's way: no folder's own Python code ever runs, and a damaged file is named.

Every transformers `from_pretrained` here passes `trust_remote_code=False`: a config with an `auto_map` then
loads with transformers' own classes or fails, and never runs code or asks "y/N" on the terminal.
`reading_model` turns what transformers, safetensors, tokenizers or jinja raise about a broken folder
(a truncated safetensors or JSON file, a cut chat template, a request for remote code) into a ConfigError
that names the file, and lets every other error through unchanged.
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, SpeechLLMError


@contextmanager
def reading_model(name_or_path, what: str = "model"):
    """Run a block that loads from `name_or_path`; a failure caused by remote code or by a damaged file in
    that local folder becomes a ConfigError naming it. Other errors pass unchanged."""
    try:
        yield
    except SpeechLLMError:
        raise
    except Exception as e:
        if "trust_remote_code" in str(e) or "custom code" in str(e):
            raise ConfigError(
                f"{what} {name_or_path}: its config asks to run Python code shipped in the folder (auto_map); "
                "speechllm never runs a model folder's code (trust_remote_code=False): use a model whose "
                "architecture transformers supports natively") from None
        folder = Path(str(name_or_path))
        damaged = damaged_file(folder) if folder.is_dir() else None
        if damaged is None:
            raise
        path, reason = damaged
        raise ConfigError(f"{what} {name_or_path}: {path} is damaged ({reason}); copy or download it again") from None


def damaged_file(folder: str | Path) -> tuple[Path, str] | None:
    """(path, reason) of the first JSON, safetensors or jinja file in `folder` that does not parse, or None."""
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file():
            continue
        try:
            reason = _check(path)
        except OSError as e:
            reason = f"unreadable: {e.strerror or e}"
        if reason is not None:
            return path, reason
    return None


def _check(path: Path) -> str | None:
    if path.suffix == ".json":
        try:
            json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return f"not valid JSON: {e}"
    elif path.suffix == ".safetensors":
        return _safetensors_problem(path)
    elif path.suffix == ".jinja":
        import jinja2

        try:
            jinja2.Environment().parse(path.read_text(encoding="utf-8"))
        except (jinja2.TemplateSyntaxError, UnicodeDecodeError) as e:
            return f"not a valid jinja template: {e}"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is unusable (cut short, bad header), read from its header alone; None when sound."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size < 8:
            return f"{size} bytes, shorter than a safetensors header"
        (length,) = struct.unpack("<Q", f.read(8))
        if 8 + length > size:
            return f"cut short: its header needs {8 + length} bytes, the file has {size}"
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return f"its header is not valid JSON: {e}"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2]
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"cut short: its tensors need {needed} bytes, the file has {size}"
    return None
