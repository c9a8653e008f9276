"""Reading other projects' checkpoints and writing them as a speechllm model: files, key prefixes, LoRA folding.

Nothing here knows a particular project; skit_ai.py, speech_summarization.py and self_powered.py say where each
part of their checkpoint lives.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import ModelSpec
from ..errors import ConfigError

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)
CONVERSION_NOTE = "conversion.json"


def resolve_source(source) -> Path:
    """A local checkpoint file or folder as it is, or a hub repo id downloaded (with the hub reachable)."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    parts = str(source).split("/")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"no checkpoint {str(source)!r}: not a file or folder here, and not a hub id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        # Configs and safetensors only (never their remote code); torch pickles only when a repo has no safetensors.
        folder = Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors"]))
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            folder = Path(snapshot_download(str(source), allow_patterns=["*.json", "*.bin"]))
        return folder
    except Exception as error:  # offline, no such repo, gated: the hub's own message says which
        raise ConfigError(f"cannot download {source!r} from the hub: {' '.join(str(error).split())[:300]}") from None


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def read_state_dict(path: Path, *, allow_pickle: bool = False) -> dict:
    """Every tensor of a checkpoint: a .safetensors file, a torch pickle (.bin, .pt, .pth, .ckpt), or a folder
    holding model.safetensors / pytorch_model.bin (sharded with an index or not). Torch pickles are read with
    `weights_only=True` unless `allow_pickle` (which runs code from the file: only for files you trust)."""
    if path.is_dir():
        found = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
        if found is None:
            raise ConfigError(f"{path}: no weights ({', '.join(WEIGHT_FILES)})")
        if found.name.endswith(".index.json"):
            shards = sorted(set(read_json(found)["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(read_state_dict(path / shard, allow_pickle=allow_pickle))
            return state
        path = found
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:
        hint = "" if allow_pickle else (" (it may hold more than tensors, e.g. a Lightning checkpoint's "
                                        "hyper-parameters: if you trust the file, pass allow_pickle=True / "
                                        "--allow-pickle)")
        raise ConfigError(f"cannot read {path}: {str(error).splitlines()[0][:200]}{hint}") from None


def take_prefix(state: dict, prefix: str) -> dict:
    """The entries under `prefix`, with it removed; they leave `state`, so what is left over can be reported."""
    keys = [k for k in state if k.startswith(prefix)]
    return {k[len(prefix):]: state.pop(k) for k in keys}


def fold_lora(state: dict, scaling: float) -> dict:
    """peft's keys folded into plain ones: `X.base_layer.weight + scaling * B @ A` becomes `X.weight`, and the
    `base_model.model.` wrapper prefix goes. A state without LoRA keys comes back as it was."""
    folded = {}
    for key, value in state.items():
        key = key.replace("base_model.model.", "", 1)
        if ".lora_A." in key or ".lora_B." in key or ".lora_dropout." in key:
            continue
        folded[key.replace(".base_layer.", ".")] = value
    for key in [k for k in state if ".lora_A." in k and k.endswith(".weight")]:
        a, b = state[key], state[key.replace(".lora_A.", ".lora_B.")]
        target = key.replace("base_model.model.", "", 1).split(".lora_A.")[0] + ".weight"
        folded[target] = (folded[target].float() + scaling * (b.float() @ a.float())).to(folded[target].dtype)
    return folded


def has_lora(state: dict) -> bool:
    return any(".lora_A." in k for k in state)


def weight_norm_names(state: dict, expected: set[str]) -> dict:
    """Older torch saved weight-normed convolutions (HuBERT's positional convolution) as `weight_g` / `weight_v`;
    today's modules name them `parametrizations.weight.original0` / `original1`."""
    renamed = {}
    for key, value in state.items():
        for old, new in ((".weight_g", ".parametrizations.weight.original0"),
                         (".weight_v", ".parametrizations.weight.original1")):
            if key.endswith(old) and key[: -len(old)] + new in expected:
                key = key[: -len(old)] + new
        renamed[key] = value
    return renamed


def hf_config_dict(given, name: str | None, what: str) -> dict:
    """A transformers config as a dict: `given` (a dict, or a folder / hub id holding config.json), else the config of
    `name` (what their code loads with AutoConfig.from_pretrained; needs the hub unless cached)."""
    from transformers import AutoConfig

    if isinstance(given, dict):
        return given
    source = given or name
    if source is None:
        raise ConfigError(f"the checkpoint does not name its {what}; pass its config (a folder or hub id)")
    try:
        return AutoConfig.from_pretrained(str(source)).to_dict()
    except OSError as error:
        raise ConfigError(f"cannot read the {what} config {str(source)!r} ({str(error).splitlines()[0][:200]}); "
                          "with the hub off, pass a local folder holding its config.json") from None


def tokenizer_of(given, name: str | None):
    """A tokenizer object as it is, else AutoTokenizer from a folder or hub id (`given`, else `name`)."""
    from transformers import AutoTokenizer

    if given is not None and not isinstance(given, (str, Path)):
        return given
    source = given or name
    if source is None:
        raise ConfigError("the checkpoint does not name its tokenizer; pass one (a folder or hub id)")
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except OSError as error:
        raise ConfigError(f"cannot load the tokenizer {str(source)!r} ({str(error).splitlines()[0][:200]})") from None


def build_and_save(spec: ModelSpec, tokenizer, state: dict, out, *, note: dict, pretrained_prefixes=()):
    """Build the model `spec` describes, load `state` (speechllm key names) into it, save it to `out` (full weights, a
    `conversion.json` note beside them) and return it in eval mode. Every model weight must come from `state` except
    those under `pretrained_prefixes` (parts loaded from their own pretrained checkpoint); a weight of `state` the
    model does not have is an error too: a conversion either maps everything or says what it could not."""
    from ..models import SpeechLLMForConditionalGeneration

    model = SpeechLLMForConditionalGeneration.from_spec(spec, tokenizer=tokenizer)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    state = weight_norm_names(state, set(shapes))
    unexpected = sorted(set(state) - set(shapes))
    missing = sorted(k for k in set(shapes) - set(state) if not k.startswith(tuple(pretrained_prefixes)))
    if unexpected or missing:
        raise ConfigError(f"the checkpoint does not fit the model its config describes: {len(missing)} weights "
                          f"missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    for key, value in state.items():
        if tuple(value.shape) != shapes[key]:
            raise ConfigError(f"{key}: the checkpoint's shape {tuple(value.shape)} differs from the model's "
                              f"{shapes[key]}")
    model.load_state_dict(state, strict=False)
    model.eval()
    out = Path(out)
    model.save_pretrained(out)
    (out / CONVERSION_NOTE).write_text(json.dumps(note, indent=2) + "\n")
    return model
