"""Kang & Roy's audio-encoder checkpoint and a Self-Powered LSM checkpoint convert to speechllm models that answer
token for token as their code does.

The checkpoints are tiny random ones in the layouts their public code reads and writes
(wonjune-kang/llm-speech-summarization: model/audio_encoder.py, inference.py, utils.py; ytf-philp/Self-powered-LSM:
src/modeling_blsp.py, its Vicuna prompt); the reference passes are written from that code's structure. The
Self-Powered Q-Former reference works on BLIP-2's Qformer.py key names directly, independent of transformers' class.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tone
from safetensors.torch import save_file
from tokenizers.processors import TemplateProcessing
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    LlamaConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

import speechllm
from speechllm.convert import convert, generate_as_released
from speechllm.convert.released import released_inputs
from speechllm.convert.self_powered import SYSTEM
from speechllm.convert.self_powered import released_prompt as self_powered_prompt
from speechllm.convert.speech_summarization import released_prompt as summarization_prompt
from speechllm.errors import ConfigError
from speechllm.testing import TINY_ENCODERS, tiny_llm_config, tiny_tokenizer


def llama_tokenizer():
    """The tiny tokenizer, adding BOS as Llama's does (their code drops it again in places: that must survive)."""
    tokenizer = tiny_tokenizer()
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tokenizer


def strip(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@torch.no_grad()
def greedy(llm, embeds, max_new_tokens=8):
    logits = llm(inputs_embeds=embeds).logits[0]
    return logits, llm.generate(inputs_embeds=embeds, max_new_tokens=max_new_tokens, do_sample=False)[0].tolist()


@torch.no_grad()
def ours(model_dir, project, prompt, audio, instruction):
    model = speechllm.load(model_dir, device="cpu")
    logits = model(**released_inputs(model, prompt, (audio, 16000))).logits[0]
    tokens, _ = generate_as_released(model, project, (audio, 16000), instruction, max_new_tokens=8)
    return logits, tokens


# -- Kang & Roy ------------------------------------------------------------------------------------------------------


@pytest.fixture
def summarization_files(tmp_path):
    encoder_dir, llm_dir = tmp_path / "hubert", tmp_path / "minichat"
    encoder_config = AutoConfig.for_model(**TINY_ENCODERS["hubert"])
    encoder_config.save_pretrained(encoder_dir)
    tokenizer = llama_tokenizer()
    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(LlamaConfig(**tiny_llm_config(len(tokenizer) + 8)))
    llm.save_pretrained(llm_dir)
    tokenizer.save_pretrained(llm_dir)
    encoder = AutoModel.from_config(encoder_config)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["embed_projection.weight"] = torch.randn(llm.config.hidden_size, encoder_config.hidden_size) * 0.2
    state["embed_projection.bias"] = torch.randn(llm.config.hidden_size) * 0.1
    torch.save({"audio_encoder": state, "step": 30000}, tmp_path / "audio_encoder.pt")
    return tmp_path / "audio_encoder.pt", encoder_dir, llm_dir, state


@torch.no_grad()
def kang_roy_answer(state, encoder_dir, llm_dir, audio, text_prompt):
    """Their generate_audio_response with the "pool" encoder: raw audio, HuBERT, AvgPool1d(8, 4), Linear, then
    [|User|] (BOS) + text prompt (BOS dropped) + audio + "</s>[|Assistant|]" (BOS dropped)."""
    from transformers import AutoTokenizer

    encoder = AutoModel.from_config(AutoConfig.from_pretrained(encoder_dir)).eval()
    encoder.load_state_dict(strip(state, "encoder."))
    frames = encoder(torch.tensor(audio)[None]).last_hidden_state
    pooled = F.avg_pool1d(frames.transpose(1, 2), kernel_size=8, stride=4).transpose(1, 2)
    audio_embeds = F.linear(pooled, state["embed_projection.weight"], state["embed_projection.bias"])
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    llm = AutoModelForCausalLM.from_pretrained(llm_dir).eval()
    embed = llm.get_input_embeddings()
    parts = [embed(tokenizer("[|User|]", return_tensors="pt").input_ids)]
    if text_prompt:
        parts.append(embed(tokenizer(text_prompt, return_tensors="pt").input_ids[:, 1:]))
    parts += [audio_embeds, embed(tokenizer("</s>[|Assistant|]", return_tensors="pt").input_ids)[:, 1:]]
    return greedy(llm, torch.cat(parts, dim=1))


@pytest.mark.parametrize("seconds, text_prompt", [(1.3, "summarize the following passage in one sentence. "),
                                                  (0.9, "")])
def test_summarization_encoder_answers_as_their_code(tmp_path, summarization_files, seconds, text_prompt):
    checkpoint, encoder_dir, llm_dir, state = summarization_files
    convert(checkpoint, tmp_path / "out", "speech-summarization", llm=str(llm_dir), encoder_config=str(encoder_dir))
    audio, _ = tone(seconds)
    their_logits, their_tokens = kang_roy_answer(state, encoder_dir, llm_dir, audio, text_prompt)
    our_logits, our_tokens = ours(tmp_path / "out", "speech-summarization", summarization_prompt(text_prompt), audio,
                                  text_prompt)
    assert our_logits.shape == their_logits.shape  # AvgPool1d's token count, partial window dropped
    torch.testing.assert_close(our_logits, their_logits, atol=2e-4, rtol=1e-4)
    assert our_tokens == their_tokens


def test_stacked_encoder_checkpoint_is_refused(tmp_path, summarization_files):
    checkpoint, encoder_dir, llm_dir, state = summarization_files
    state = {**state, "embed_projection.weight": torch.zeros(state["embed_projection.weight"].shape[0], 4 * 32)}
    torch.save({"audio_encoder": state}, tmp_path / "stacked.pt")
    with pytest.raises(ConfigError, match="stacking"):
        convert(tmp_path / "stacked.pt", tmp_path / "out", "speech-summarization", llm=str(llm_dir),
                encoder_config=str(encoder_dir))


# -- Self-Powered LSM ------------------------------------------------------------------------------------------------

QFORMER_HIDDEN, QFORMER_FF, QFORMER_HEADS = 64, 128, 1


def blip2_qformer_state(encoder_width, layers=2, queries=1):
    """Random weights under BLIP-2 Qformer.py's names (BertLMHeadModel with cross-attention on every layer), text-only
    parts included as their checkpoint holds them."""
    h, ff = QFORMER_HIDDEN, QFORMER_FF
    shapes = {"bert.embeddings.word_embeddings.weight": (50, h), "bert.embeddings.position_embeddings.weight": (64, h),
              "bert.embeddings.LayerNorm.weight": (h,), "bert.embeddings.LayerNorm.bias": (h,),
              "cls.predictions.bias": (50,), "cls.predictions.transform.dense.weight": (h, h)}
    for n in range(layers):
        p = f"bert.encoder.layer.{n}."
        for block, kv_width in (("attention.", h), ("crossattention.", encoder_width)):
            shapes.update({p + block + "self.query.weight": (h, h), p + block + "self.key.weight": (h, kv_width),
                           p + block + "self.value.weight": (h, kv_width), p + block + "output.dense.weight": (h, h)})
            for name in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm"):
                shapes[p + block + name + ".bias"] = (h,)
            shapes[p + block + "output.LayerNorm.weight"] = (h,)
        for ffn in ("", "_query"):  # the text feed-forward (unused by queries) and the queries' own
            shapes.update({p + f"intermediate{ffn}.dense.weight": (ff, h), p + f"intermediate{ffn}.dense.bias": (ff,),
                           p + f"output{ffn}.dense.weight": (h, ff), p + f"output{ffn}.dense.bias": (h,),
                           p + f"output{ffn}.LayerNorm.weight": (h,), p + f"output{ffn}.LayerNorm.bias": (h,)})
    state = {k: torch.randn(shape) * (0.3 if len(shape) == 2 else 0.1) for k, shape in shapes.items()}
    for k in state:
        if "LayerNorm.weight" in k:
            state[k] = 1 + state[k]
    state["bert.embeddings.position_ids"] = torch.arange(64)[None]
    return state


def bert_block(x, memory, state, p):
    """BERT attention with its post-norm residual, under Qformer.py's names."""
    def lin(t, name):
        return F.linear(t, state[p + name + ".weight"], state[p + name + ".bias"])

    def heads(t):
        return t.view(t.shape[0], t.shape[1], QFORMER_HEADS, -1).transpose(1, 2)

    q, k, v = heads(lin(x, "self.query")), heads(lin(memory, "self.key")), heads(lin(memory, "self.value"))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    context = (weights @ v).transpose(1, 2).reshape(x.shape)
    return F.layer_norm(lin(context, "output.dense") + x, x.shape[-1:], state[p + "output.LayerNorm.weight"],
                        state[p + "output.LayerNorm.bias"], eps=1e-12)


def qformer_reference(state, queries, speech, layers=2):
    h = F.layer_norm(queries, queries.shape[-1:], state["bert.embeddings.LayerNorm.weight"],
                     state["bert.embeddings.LayerNorm.bias"], eps=1e-12)
    for n in range(layers):
        p = f"bert.encoder.layer.{n}."
        h = bert_block(h, h, state, p + "attention.")
        h = bert_block(h, speech, state, p + "crossattention.")
        def lin(t, name):
            return F.linear(t, state[p + name + ".weight"], state[p + name + ".bias"])

        h = F.layer_norm(lin(F.gelu(lin(h, "intermediate_query.dense")), "output_query.dense") + h, h.shape[-1:],
                         state[p + "output_query.LayerNorm.weight"], state[p + "output_query.LayerNorm.bias"],
                         eps=1e-12)
    return h


@pytest.fixture
def self_powered_folder(tmp_path):
    tokenizer = llama_tokenizer()
    whisper_config = WhisperConfig(**TINY_ENCODERS["whisper"]).to_dict()
    llama_config = LlamaConfig(**tiny_llm_config(len(tokenizer) + 8)).to_dict()
    torch.manual_seed(0)
    whisper = WhisperEncoder(WhisperConfig(**whisper_config))
    llama = AutoModelForCausalLM.from_config(LlamaConfig(**llama_config))
    width = whisper.config.d_model
    state = {f"whisper_model.{k}": v for k, v in whisper.state_dict().items()}
    state.update({f"llama_model.{k}": v for k, v in llama.state_dict().items()})
    state.update({f"speech_Qformer.{k}": v for k, v in blip2_qformer_state(width).items()})
    state["speech_query_tokens"] = torch.randn(1, 1, QFORMER_HIDDEN)
    state["ln_speech.weight"], state["ln_speech.bias"] = 1 + 0.1 * torch.randn(width), 0.1 * torch.randn(width)
    state["speech_llama_proj.weight"] = torch.randn(llama.config.hidden_size, QFORMER_HIDDEN) * 0.3
    state["speech_llama_proj.bias"] = torch.randn(llama.config.hidden_size) * 0.1
    folder = tmp_path / "self-powered"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    config = {"whisper_config": whisper_config, "llama_config": llama_config, "speech_qformer_layer": 2,
              "speech_qformer_token_num": 1, "second_per_frame": 0.33333, "second_stride": 0.33333, "lora": False}
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    return folder, state, config


@torch.no_grad()
def self_powered_answer(state, config, audio, instruction):
    """Their BlspModel.generate: 30 s log-mel, Whisper encoder, ln_speech, unfold into windows of
    round(T * second_per_frame / 30) frames, Q-Former per window, projection, then the Vicuna prompt around it."""

    whisper = WhisperEncoder(WhisperConfig(**config["whisper_config"])).eval()
    whisper.load_state_dict(strip(state, "whisper_model."))
    mel = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt").input_features
    speech = F.layer_norm(whisper(mel).last_hidden_state, (whisper.config.d_model,), state["ln_speech.weight"],
                          state["ln_speech.bias"])
    frames = speech.shape[1]
    kernel, stride = round(frames * config["second_per_frame"] / 30.0), round(frames * config["second_stride"] / 30.0)
    windows = speech.unfold(1, kernel, stride).permute(0, 1, 3, 2).reshape(-1, kernel, speech.shape[-1])
    queries = state["speech_query_tokens"].expand(windows.shape[0], -1, -1)
    out = qformer_reference(strip(state, "speech_Qformer."), queries, windows)
    speech_embeds = F.linear(out, state["speech_llama_proj.weight"], state["speech_llama_proj.bias"]).view(1, -1, 64)
    llama = AutoModelForCausalLM.from_config(LlamaConfig(**config["llama_config"])).eval()
    llama.load_state_dict(strip(state, "llama_model."))
    tokenizer = llama_tokenizer()
    embed = llama.get_input_embeddings()
    prefix = tokenizer(f"{SYSTEM}USER: {instruction}\nSPEECH:", return_tensors="pt").input_ids
    suffix = tokenizer("\nASSISTANT:", return_tensors="pt").input_ids[:, 1:]
    return greedy(llama, torch.cat([embed(prefix), speech_embeds, embed(suffix)], dim=1))


def test_self_powered_checkpoint_answers_as_their_code(tmp_path, self_powered_folder):
    folder, state, config = self_powered_folder
    convert(folder, tmp_path / "out", "self-powered")
    audio, _ = tone(2.0)
    instruction = "summarize the following passage in one sentence."
    their_logits, their_tokens = self_powered_answer(state, config, audio, instruction)
    our_logits, our_tokens = ours(tmp_path / "out", "self-powered", self_powered_prompt(instruction), audio,
                                  instruction)
    assert our_logits.shape == their_logits.shape  # 88 windows of 17 frames, as their unfold gives for 30 s
    torch.testing.assert_close(our_logits, their_logits, atol=2e-4, rtol=1e-4)
    assert our_tokens == their_tokens
