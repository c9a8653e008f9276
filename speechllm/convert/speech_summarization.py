"""Kang & Roy, speech summarization by prompting an LLM with audio (github.com/wonjune-kang/llm-speech-summarization).

Their released checkpoint is the audio encoder alone (the LLM, MiniChat-3B, stays frozen and is loaded from the hub).
Layout, read from model/audio_encoder.py and inference.py: `torch.load(file)["audio_encoder"]` holds
- `encoder.*`: a transformers HuBERT (`AutoModel` of facebook/hubert-large-ls960-ft), called on the raw waveform
  (no normalisation, no attention mask);
- `embed_projection.*`: Linear(hidden -> LLM width) after `AvgPool1d(kernel 8, stride 4)` over the frames ("pool":
  our `pool_linear` connector with `partial_window: false`, as AvgPool1d drops a last partial window).
Their "stack" and "ctc_pool" downsampling (the latter needs a HuBERT-CTC model's word offsets at inference) have the
same weight shapes as "pool" or other ones, cannot be told from the file, and are not converted.
"""

from __future__ import annotations

from ..config import ConnectorSpec, EncoderSpec, LLMSpec, ModelSpec
from ..errors import ConfigError
from .checkpoints import build_and_save, hf_config_dict, read_state_dict, resolve_source, take_prefix, tokenizer_of
from .registry import register_converter
from .released import PromptPiece, ReleasedPrompt

ENCODER = "facebook/hubert-large-ls960-ft"
LLM = "GeneZC/MiniChat-3B"


def released_prompt(instruction: str = "") -> ReleasedPrompt:
    """Their `generate_audio_response(audio, additional_text_prompt=instruction)`: "[|User|]" with BOS, the text prompt
    without its BOS, the audio, then "</s>[|Assistant|]" without its BOS."""
    before = [PromptPiece("[|User|]", special=True)]
    if instruction:
        before.append(PromptPiece(instruction, special=True, drop_first=True))
    return ReleasedPrompt(before=before, after=[PromptPiece("</s>[|Assistant|]", special=True, drop_first=True)])


@register_converter("speech-summarization", released_prompt=released_prompt,
                    summary="Kang & Roy's audio encoder (HuBERT + AvgPool(8, 4) + Linear) for a frozen MiniChat-3B")
def convert_speech_summarization(source, out, *, llm: str = LLM, encoder_config=None, tokenizer=None,
                                 kernel: int = 8, stride: int = 4, allow_pickle: bool = False):
    """Convert their audio-encoder checkpoint (a torch file with an "audio_encoder" state dict) into a speechllm model
    folder `out` around the LLM `llm` (hub id or folder; their code loads MiniChat, the paper's MiniChat-3B by
    default); returns the model. Pooling kernel and stride come from their config (8 and 4 in the released one)."""
    path = resolve_source(source)
    checkpoint = read_state_dict(path, allow_pickle=allow_pickle)
    state = dict(checkpoint.get("audio_encoder", checkpoint))
    encoder_state = take_prefix(state, "encoder.")
    projection = take_prefix(state, "embed_projection.")
    if state or not encoder_state or "weight" not in projection:
        raise ConfigError(f"{source}: not their audio-encoder checkpoint (encoder.*, embed_projection.*)"
                          + (f"; unexpected weights {sorted(state)[:3]}" if state else ""))
    encoder = hf_config_dict(encoder_config, ENCODER, "audio encoder")
    if projection["weight"].shape[1] != encoder.get("hidden_size"):
        raise ConfigError(f"{source}: embed_projection reads {projection['weight'].shape[1]} channels, not the "
                          f"encoder's {encoder.get('hidden_size')}: frame stacking ('stack') is not converted")
    spec = ModelSpec(
        encoder=EncoderSpec(family="hubert", hf_config=encoder, normalize=False),
        connector=ConnectorSpec(type="pool_linear", options={"kernel": kernel, "stride": stride,
                                                             "partial_window": False}, train="frozen"),
        llm=LLMSpec(name_or_path=str(llm)),
    )
    state = {**{f"encoder.model.{k}": v for k, v in encoder_state.items()},
             **{f"connector.proj.{k}": v for k, v in projection.items()}}
    note = {"from": "speech-summarization", "source": str(source), "llm": str(llm), "prompt":
            "speechllm.convert.generate_as_released(model, 'speech-summarization', audio, text_prompt)"}
    return build_and_save(spec, tokenizer_of(tokenizer, llm), state, out, note=note,
                          pretrained_prefixes=("language_model.",))
