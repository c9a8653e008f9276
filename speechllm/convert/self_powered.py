"""Self-Powered LSM (Yu et al. 2024; github.com/ytf-philp/Self-powered-LSM): Whisper encoder, window Q-Former, Vicuna.

Layout, read from src/modeling_blsp.py and src/configuration_blsp.py (their `BlspModel`, saved with
`save_pretrained`: config.json + weights):
- `whisper_model.*`: a Whisper encoder (`WhisperEncoder(WhisperConfig(**config.whisper_config))`) on 30 s log-mel input
  (their collator's WhisperFeatureExtractor pads every clip to 30 s), then `ln_speech` (LayerNorm);
- windows of round(T * second_per_frame / 30) frames every round(T * second_stride / 30) frames, T = 1500 frames for
  30 s (torch unfold: whole windows only, so `partial_window: false`; 17 frames, 88 windows, the last 4 frames
  unread), each read by `speech_Qformer.bert` (BLIP-2's Q-Former: BERT, 2 layers with cross-attention) with
  `speech_query_tokens`, then `speech_llama_proj` (Linear): our `window_blip2_qformer`;
- `llama_model.*`: a LlamaForCausalLM (`config.llama_config`), folded first if saved with peft LoRA keys.
Not in the public repo: `modeling_whisper_encoder.py` and `Qformer.py`, which it imports. The conversion assumes the
first computes transformers' Whisper encoder on the 30 s input and the second is BLIP-2's / SALMONN's Q-Former (the
key names `bert.encoder.layer.N.attention.self.query` ... are that file's); its text-only parts (word and position
embeddings, the text feed-forward, the LM head) are unused on queries and dropped. Their README's checkpoint link is
empty, so no released file was seen.
"""

from __future__ import annotations

import re

from ..config import ConnectorSpec, EncoderSpec, LLMSpec, ModelSpec
from ..errors import ConfigError
from .checkpoints import (
    build_and_save,
    fold_lora,
    has_lora,
    read_json,
    read_state_dict,
    resolve_source,
    take_prefix,
    tokenizer_of,
)
from .registry import register_converter
from .released import PromptPiece, ReleasedPrompt

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions. \n\n")
ASR_INSTRUCTION = "Provide the English text corresponding to the speech"
UNUSED_QFORMER = ("embeddings.word_embeddings.", "embeddings.position_embeddings.", "embeddings.position_ids")
TEXT_FEED_FORWARD = re.compile(r"encoder\.layer\.\d+\.(intermediate|output)\.")  # queries use *_query instead


def released_prompt(instruction: str = ASR_INSTRUCTION) -> ReleasedPrompt:
    """Their Vicuna prompt (speech_text_paired_dataset_vicuna.py): system text and "USER: {instruction}\\nSPEECH:" with
    BOS, the audio, "\\nASSISTANT:" without its BOS."""
    return ReleasedPrompt(before=[PromptPiece(f"{SYSTEM}USER: {instruction}\nSPEECH:", special=True)],
                          after=[PromptPiece("\nASSISTANT:", special=True, drop_first=True)])


def qformer_names(state: dict) -> dict:
    """BLIP-2's Qformer.py names -> transformers' Blip2QFormerModel names, text-only parts dropped."""
    renamed = {}
    for key, value in state.items():
        if key.startswith(UNUSED_QFORMER) or TEXT_FEED_FORWARD.match(key):
            continue
        key = key.replace("embeddings.LayerNorm.", "layernorm.").replace("attention.self.", "attention.attention.")
        renamed[key] = value
    return renamed


@register_converter("self-powered", released_prompt=released_prompt,
                    summary="Self-Powered LSM (Whisper + window Q-Former + Vicuna), as their BlspModel saves it")
def convert_self_powered(source, out, *, tokenizer=None, allow_pickle: bool = False):
    """Convert a Self-Powered LSM folder (their config.json + weights) into a speechllm model folder `out`; the
    tokenizer (Vicuna's) comes from `tokenizer` or the folder. Returns the model."""
    path = resolve_source(source)
    theirs = read_json(path / "config.json") if path.is_dir() else {}
    if "whisper_config" not in theirs or "llama_config" not in theirs:
        raise ConfigError(f"{source}: needs their config.json (whisper_config, llama_config, ...) beside the weights")
    state = dict(read_state_dict(path, allow_pickle=allow_pickle))
    encoder = take_prefix(state, "whisper_model.")
    llm = take_prefix(state, "llama_model.")
    if has_lora(llm):
        llm = fold_lora(llm, theirs.get("lora_alpha", 32) / theirs.get("lora_rank", 4))
    qformer = qformer_names(take_prefix(state, "speech_Qformer.bert."))
    take_prefix(state, "speech_Qformer.cls.")  # the BERT LM head: never used on queries
    connector = {**{f"qformer.{k}": v for k, v in qformer.items()},
                 **{f"input_norm.{k}": v for k, v in take_prefix(state, "ln_speech.").items()},
                 **{f"proj.{k}": v for k, v in take_prefix(state, "speech_llama_proj.").items()}}
    if "speech_query_tokens" in state:
        connector["queries"] = state.pop("speech_query_tokens")
    if state:
        raise ConfigError(f"{source}: weights outside the Self-Powered layout, e.g. {sorted(state)[:3]}")
    whisper = theirs["whisper_config"]
    frames = whisper.get("max_source_positions", 1500)  # T: every clip is padded to 30 s
    window = round(frames * theirs.get("second_per_frame", 0.33333) / 30.0)
    stride = round(frames * theirs.get("second_stride", 0.33333) / 30.0)
    hidden = connector["qformer.layernorm.weight"].shape[0]
    spec = ModelSpec(
        encoder=EncoderSpec(family="whisper", hf_config=whisper, crop_to_length=False),
        connector=ConnectorSpec(type="window_blip2_qformer", train="frozen", options={
            "window": window, "stride": stride, "partial_window": False, "hidden_dim": hidden,
            "queries": int(connector["queries"].shape[1]), "layers": int(theirs.get("speech_qformer_layer", 2)),
            "heads": hidden // 64,  # BERT's heads are 64 wide: 12 at 768
            "intermediate_dim": int(connector["qformer.encoder.layer.0.intermediate_query.dense.weight"].shape[0])}),
        llm=LLMSpec(hf_config={"model_type": "llama", **theirs["llama_config"]}),
        max_audio_seconds=30.0,  # their feature extractor cuts anything longer to 30 s; here it is refused instead
    )
    state = {**{f"encoder.model.{k}": v for k, v in encoder.items()},
             **{f"connector.{k}": v for k, v in connector.items()},
             **{f"language_model.{k}": v for k, v in llm.items()}}
    note = {"from": "self-powered", "source": str(source), "window_frames": window, "stride_frames": stride,
            "prompt": "speechllm.convert.generate_as_released(model, 'self-powered', audio, instruction)"}
    return build_and_save(spec, tokenizer_of(tokenizer, str(path) if path.is_dir() else None), state, out, note=note)
