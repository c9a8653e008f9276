"""skit-ai SpeechLLM (speechllm-2B: HuBERT-xlarge, speechllm-1.5B: WavLM-large; TinyLlama-1.1B-Chat, LoRA merged).

Their layout, read from github.com/skit-ai/SpeechLLM (huggingface/hf_repo/model.py, trainer.py, model/*.py):
- `audio_encoder.encoder.*`: a transformers HuBERT or WavLM (`AutoModel`), called on one clip without an attention mask
  after `AutoFeatureExtractor(config.audio_processor_name)` (microsoft/wavlm-base's, whose `do_normalize` decides the
  waveform normalisation);
- `connector.layer.{1,3,5}.*`: ReLU, Conv1d(k5), ReLU, Conv1d(k5, stride 2), ReLU, Conv1d(k5; the last kernel is read
  from the weights), no padding: our `speechllm_cnn` connector, whose modules are the same Sequential;
- `llm_model.*`: the LLM (`AutoModelForCausalLM.from_config(config.llm_model_name)`), LoRA merged before release. A
  Lightning checkpoint of their trainer (`state_dict` with peft's `base_layer` / `lora_A` / `lora_B` keys) is folded
  with `lora_alpha / lora_r` from its hyper-parameters.
Their `generate_meta` prompt is `released_prompt` below; `generate_as_released` decodes from the same ids.
"""

from __future__ import annotations

from ..config import ConnectorSpec, EncoderSpec, LLMSpec, ModelSpec
from ..errors import ConfigError
from .checkpoints import (
    build_and_save,
    fold_lora,
    has_lora,
    hf_config_dict,
    read_json,
    read_state_dict,
    resolve_source,
    take_prefix,
    tokenizer_of,
)
from .registry import register_converter
from .released import PromptPiece, ReleasedPrompt

DEFAULT_INSTRUCTION = "Give me the following information about the audio [Transcript]"


def released_prompt(instruction: str = DEFAULT_INSTRUCTION) -> ReleasedPrompt:
    """Their `generate_meta`: three pieces tokenized without special tokens, the audio after the first. (Their
    training prompt differed: "Input:\\n" without the space, "Output:\\n" and a target starting "<s>".)"""
    return ReleasedPrompt(
        before=[PromptPiece(f"Instruction:\n{instruction}\n\nInput: \n<speech>")],
        after=[PromptPiece("</speech>\n\nOutput:"), PromptPiece("\n<s>")],
    )


def _feature_normalization(processor_name: str | None) -> bool:
    from transformers import AutoFeatureExtractor

    if processor_name is None:
        raise ConfigError("the checkpoint names no audio processor: pass normalize=True/False")
    try:
        return bool(getattr(AutoFeatureExtractor.from_pretrained(processor_name), "do_normalize", False))
    except OSError:
        raise ConfigError(f"cannot read the audio processor {processor_name!r} (hub off?): pass normalize=True/False "
                          "(--normalize / --no-normalize), its do_normalize") from None


@register_converter("skit-ai", released_prompt=released_prompt,
                    summary="skit-ai/speechllm-2B and -1.5B (HuBERT/WavLM + CNN connector + TinyLlama, LoRA merged)")
def convert_skit_ai(source, out, *, encoder_config=None, llm_config=None, tokenizer=None, normalize: bool | None = None,
                    lora_scaling: float | None = None, allow_pickle: bool = False):
    """Convert a skit-ai SpeechLLM checkpoint (hub id, folder with config.json + weights, or a trainer .ckpt) into a
    speechllm model folder `out`; returns the model.

    The encoder, LLM and tokenizer configs come from the names their config.json records (audio_encoder_name,
    llm_model_name, audio_processor_name), fetched from the hub, unless given here (a dict, folder or hub id).
    """
    path = resolve_source(source)
    theirs = read_json(path / "config.json") if path.is_dir() else {}
    checkpoint = read_state_dict(path, allow_pickle=allow_pickle)
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint.get("hyper_parameters"), dict) else {}
    theirs = {**hparams, **theirs}
    state = dict(checkpoint.get("state_dict", checkpoint))
    encoder_state = take_prefix(state, "audio_encoder.encoder.")
    connector_state = take_prefix(state, "connector.layer.")
    llm_state = take_prefix(state, "llm_model.")
    if state:
        raise ConfigError(f"{source}: weights outside skit-ai's layout, e.g. {sorted(state)[:3]}")
    if not encoder_state or not connector_state or not llm_state:
        raise ConfigError(f"{source}: not a skit-ai SpeechLLM checkpoint (audio_encoder.encoder.*, connector.layer.*, "
                          "llm_model.*)")
    if has_lora(llm_state):
        if lora_scaling is None:
            rank, alpha = theirs.get("lora_r"), theirs.get("lora_alpha")
            if not rank or not alpha:
                raise ConfigError("the checkpoint holds unmerged LoRA weights but no lora_r / lora_alpha: pass "
                                  "lora_scaling (alpha / r)")
            lora_scaling = alpha / rank
        llm_state = fold_lora(llm_state, lora_scaling)
    if "5.weight" not in connector_state or "3.weight" not in connector_state:
        raise ConfigError(f"{source}: connector.layer.* is not their 'cnn' connector (a 'linear' or 'linear-pool' "
                          "connector is not converted)")
    encoder = hf_config_dict(encoder_config, theirs.get("audio_encoder_name"), "audio encoder")
    llm = hf_config_dict(llm_config, theirs.get("llm_model_name") or theirs.get("llm_name"), "LLM")
    if normalize is None:
        normalize = _feature_normalization(theirs.get("audio_processor_name", "microsoft/wavlm-base"))
    family = encoder.get("model_type")
    if family not in ("hubert", "wavlm", "wav2vec2"):
        raise ConfigError(f"audio encoder of type {family!r}: only HuBERT / WavLM / wav2vec2 checkpoints are converted")
    spec = ModelSpec(
        encoder=EncoderSpec(family=family, hf_config=encoder, normalize=normalize),
        connector=ConnectorSpec(type="speechllm_cnn", train="frozen",
                                options={"last_kernel": int(connector_state["5.weight"].shape[-1])}),
        llm=LLMSpec(hf_config=llm),
    )
    state = {**{f"encoder.model.{k}": v for k, v in encoder_state.items()},
             **{f"connector.net.{k}": v for k, v in connector_state.items()},
             **{f"language_model.{k}": v for k, v in llm_state.items()}}
    note = {"from": "skit-ai", "source": str(source), "prompt": "speechllm.convert.generate_as_released(model, "
            "'skit-ai', audio, instruction)", "normalize": normalize}
    return build_and_save(spec, tokenizer_of(tokenizer, theirs.get("llm_model_name") or theirs.get("llm_name")),
                          state, out, note=note)
