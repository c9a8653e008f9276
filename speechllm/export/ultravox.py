"""Export a speechllm model as a Hugging Face Ultravox folder, which vLLM serves without speechllm.

What vLLM loads (vllm/model_executor/models/ultravox.py, `UltravoxModel`, and its config class
vllm/transformers_utils/configs/ultravox.py): config.json with model_type "ultravox", `audio_config` (a Whisper
config), `text_config` (a causal LM vLLM implements), `stack_factor`, `hidden_size` (the projector's width before
SwiGLU), `projector_act`, `projector_ln_mid`, `audio_token_index`; weights `audio_tower.*` (transformers'
WhisperEncoder names), `multi_modal_projector.{ln_pre,linear_1,ln_mid|ln_post,linear_2}.weight` and
`language_model.*` (the LLM's own names). The processor comes from the folder (ultravox_processing.py, loaded with
--trust-remote-code), so the audio reaches vLLM's encoder exactly as it reached ours.

A model maps onto that architecture exactly only when it is: a Whisper encoder run on each clip's own frames
(`options: {pad_to_window: false}`), the `ultravox` connector, and a decoder-only LLM that reads the audio in its
prompt. `export_blockers` names every part that is not, and why.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import ConfigError
from ..pretrained import gemma_notice_files

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
PROCESSOR_MODULE = "ultravox_processing.py"
# Decoder-only LLM families that vLLM implements and Ultravox has been released with or can wrap (`text_config`
# is built by transformers' CONFIG_MAPPING and resolved through vLLM's model registry by `architectures`).
VLLM_TEXT_MODELS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "granite", "phi3")
# Ultravox cuts audio into 30 s chunks (3000 mel frames), as Whisper's encoder window.
CHUNK_SECONDS = 30.0


def export_blockers(spec) -> list[str]:
    """Why a model with this `ModelSpec` cannot be served as Ultravox: one sentence per part; empty if it can."""
    reasons = []
    encoder = spec.encoder
    if encoder.family != "whisper":
        why = ("transcribes with Whisper's decoder and maps tokens, a stage vLLM's Ultravox does not have"
               if encoder.family == "whisper_transcriber" else "vLLM's Ultravox runs a Whisper encoder only")
        reasons.append(f"encoder: family {encoder.family!r} cannot be exported: {why}")
    elif encoder.options.get("pad_to_window", True):
        reasons.append("encoder: this Whisper encoder reads 30 s padded windows, while vLLM's Ultravox reads each "
                       "clip's own frames, so its connector was trained on different features; train with "
                       "encoder options {pad_to_window: false}")
    elif encoder.options.get("bucket_seconds") is not None:
        reasons.append("encoder: bucket_seconds pads each clip with silence to a bucket, while vLLM's Ultravox reads "
                       "each clip's own frames; train without bucket_seconds")
    if encoder.family == "whisper" and (encoder.window_seconds or CHUNK_SECONDS) != CHUNK_SECONDS:
        reasons.append(f"encoder: window_seconds {encoder.window_seconds} differs from Ultravox's 30 s chunks")
    if spec.fusion_encoder is not None:
        reasons.append("fusion_encoder: Ultravox has one audio encoder; a second one has nowhere to go")
    if spec.connector.type != "ultravox":
        detail = {
            "stack_mlp": "its biases, gate order and LayerNorm output differ from Ultravox's projector",
            "window_qformer": "a Q-Former has no counterpart in Ultravox's projector",
            "speechllm_cnn": "convolutions have no counterpart in Ultravox's projector",
            "identity": "Ultravox always stacks frames and projects them",
        }.get(spec.connector.type, "Ultravox's projector is frame stacking + RMSNorm + SwiGLU MLP only")
        reasons.append(f"connector: type {spec.connector.type!r} cannot be exported ({detail}); train with connector "
                       "type 'ultravox'")
    if spec.llm.coupling != "prefix":
        reasons.append(f"llm: coupling {spec.llm.coupling!r} (an LLM that reads audio through cross-attention, such "
                       "as Whisper's decoder) cannot be exported: Ultravox writes audio into prompt positions")
    model_type = (spec.llm.hf_config or {}).get("model_type")
    if spec.llm.coupling == "prefix" and model_type not in VLLM_TEXT_MODELS:
        reasons.append(f"llm: model_type {model_type!r} is not one this exporter knows vLLM's Ultravox can wrap "
                       f"({', '.join(VLLM_TEXT_MODELS)})")
    if spec.audio_token != "<|audio|>":
        reasons.append(f"audio_token: {spec.audio_token!r}; vLLM's Ultravox finds audio by the text '<|audio|>'")
    return reasons


def check_exportable(spec) -> None:
    """ConfigError naming every part of the model that Ultravox cannot hold."""
    reasons = export_blockers(spec)
    if reasons:
        raise ConfigError("this model cannot be exported to Ultravox (vLLM):\n  - " + "\n  - ".join(reasons))


def ultravox_config(model) -> dict:
    """config.json of the Ultravox folder: the keys vLLM's UltravoxConfig and UltravoxModel read."""
    spec = model.config.model_spec
    connector = model.connector
    text_config = model.language_model.config.to_dict()
    text_config["architectures"] = [type(model.language_model).__name__]
    return {
        "architectures": ["UltravoxModel"],
        "model_type": "ultravox",
        "audio_config": {**model.encoder.model.config.to_dict(), "model_type": "whisper"},
        "text_config": text_config,
        "audio_token_index": model.processor.audio_token_id,
        "vocab_size": text_config["vocab_size"],
        "hidden_size": connector.linear_1.out_features,
        "stack_factor": connector.stack,
        "projector_act": "swiglu",
        "projector_ln_mid": not isinstance(connector.ln_mid, torch.nn.Identity),
        "num_projector_layers": 0,
        "norm_init": 0.4,
        "ignore_index": -100,
        "torch_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "speechllm_spec": {"audio_token": spec.audio_token, "max_audio_seconds": spec.max_audio_seconds},
    }


def ultravox_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights under the names vLLM's UltravoxModel loads (tied output heads left out, as saved)."""
    prefixes = {"encoder.model.": "audio_tower.", "connector.": "multi_modal_projector.",
                "language_model.": "language_model."}
    tied = model.language_model.config.tie_word_embeddings
    state = {}
    for name, tensor in model.state_dict().items():
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix is None:
            raise ConfigError(f"weight {name!r} has no place in an Ultravox checkpoint")
        if tied and name == "language_model.lm_head.weight":
            continue
        state[prefixes[prefix] + name[len(prefix):]] = tensor.detach().cpu().contiguous()
    return state


def export_ultravox(model, out) -> Path:
    """Write `model` (adapters merged) to folder `out` as Ultravox: config.json, model.safetensors, tokenizer and chat
    template, generation_config.json (our end-of-turn tokens stop generation), Whisper's preprocessor_config.json,
    processor_config.json and ultravox_processing.py. Returns the folder."""
    check_exportable(model.config.model_spec)
    return write_ultravox_folder(model, out)


def write_ultravox_folder(model, out) -> Path:
    """The files of `export_ultravox` without its check that vLLM serves them as speechllm runs them: llama.cpp's
    converter reads the same folder for a model whose encoder reads padded 30 s windows (export/gguf.py)."""
    if any(".lora_" in name for name, _ in model.named_parameters()):
        raise ConfigError("merge the LoRA adapters first (model.merge_adapters_in_place(), or speechllm.models.load)")
    frames_per_chunk = model.encoder.model.config.max_source_positions
    if frames_per_chunk % model.connector.stack:
        log.warning("stack %d does not divide Whisper's %d frames per 30 s: vLLM stacks each 30 s chunk apart, so "
                    "clips over 30 s get one more or one fewer audio token there than in speechllm",
                    model.connector.stack, frames_per_chunk)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(ultravox_config(model), indent=2) + "\n")
    save_file(ultravox_state_dict(model), str(out / WEIGHTS), metadata={"format": "pt"})
    processor = model.processor
    processor.tokenizer.save_pretrained(out)  # with the chat template and the <|audio|> token
    eos = processor.end_of_turn_ids
    generation = {"eos_token_id": eos if len(eos) > 1 else eos[0], "pad_token_id": processor.tokenizer.pad_token_id,
                  "bos_token_id": processor.tokenizer.bos_token_id}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    model.encoder.feature_extractor.save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps({
        "processor_class": "UltravoxProcessor",
        "auto_map": {"AutoProcessor": "ultravox_processing.UltravoxProcessor"},
        "stack_factor": model.connector.stack,
        "encoder_ds_factor": 2,
        "audio_placeholder": model.config.model_spec.audio_token,
        "window_samples": model.encoder.window_samples,
    }, indent=2) + "\n")
    shutil.copyfile(Path(__file__).with_name(PROCESSOR_MODULE), out / PROCESSOR_MODULE)
    llm = model.config.model_spec.llm
    for name, text in (gemma_notice_files(llm.name_or_path) if llm.name_or_path else {}).items():
        (out / name).write_text(text, encoding="utf-8")  # the LLM's weights stay under their own terms (Gemma)
    if model.attribute_heads is not None:
        log.warning("attribute heads are not exported: vLLM answers every field from the LLM alone")
    return out
