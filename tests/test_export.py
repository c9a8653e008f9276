"""Export to vLLM's Ultravox: the files against what vLLM's model class loads, a round trip back to speechllm with
identical outputs, a forward written from vLLM's source that gives our audio embeddings, and clear refusals.

vLLM itself does not run on this CPU-only machine (its CPU build needs a source build with AVX-512 kernels), so
its side is checked against its released source: vllm/model_executor/models/ultravox.py (UltravoxModel,
UltravoxWhisperEncoder, UltravoxFeedForwardProjector, StackAudioFrames) and
vllm/transformers_utils/configs/ultravox.py (UltravoxConfig).
"""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from speechllm.cli import main
from speechllm.config import ModelSpec, from_dict
from speechllm.errors import ConfigError
from speechllm.export import export_blockers, export_model, load_ultravox
from speechllm.testing import TINY_ENCODERS, tiny_llm_config, tiny_model

EXPORTABLE = {"encoder": {"options": {"pad_to_window": False}}, "connector": {"type": "ultravox",
                                                                               "options": {"stack": 4}}}


@pytest.fixture(scope="module")
def model():
    return tiny_model("whisper", "ultravox", **EXPORTABLE)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_model(model, tmp_path_factory.mktemp("ultravox"))


def clips(*seconds):
    rng = np.random.RandomState(0)
    return [(0.1 * rng.randn(int(s * 16000))).astype(np.float32) for s in seconds]


def ask(clip):
    return [{"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": "transcribe"}]}]


def expected_weights(config: dict) -> dict[str, tuple]:
    """Names and shapes vLLM's UltravoxModel.load_weights takes, from its source: `audio_tower.` + transformers'
    WhisperEncoder names (its hf_to_vllm_mapper and _WHISPER_ENCODER_MAPPER fuse q/k/v and move fc1/fc2, and
    _create_fake_bias_for_k_proj supplies k_proj's missing bias), `multi_modal_projector.` ln_pre (d * stack),
    linear_1 without bias (hidden_size, d * stack), ln_mid (hidden_size / 2, projector_ln_mid) and linear_2
    without bias (text hidden, hidden_size / 2), and `language_model.` + the LLM's own names."""
    audio, text = config["audio_config"], config["text_config"]
    d, ffn, stack, hidden = audio["d_model"], audio["encoder_ffn_dim"], config["stack_factor"], config["hidden_size"]
    shapes = {"conv1.weight": (d, audio["num_mel_bins"], 3), "conv1.bias": (d,), "conv2.weight": (d, d, 3),
              "conv2.bias": (d,), "embed_positions.weight": (audio["max_source_positions"], d),
              "layer_norm.weight": (d,), "layer_norm.bias": (d,)}
    for i in range(audio["encoder_layers"]):
        layer = f"layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}self_attn.{proj}.weight"] = (d, d)
            if proj != "k_proj":  # Whisper's k_proj has no bias
                shapes[f"{layer}self_attn.{proj}.bias"] = (d,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[f"{layer}{norm}.weight"] = shapes[f"{layer}{norm}.bias"] = (d,)
        shapes.update({f"{layer}fc1.weight": (ffn, d), f"{layer}fc1.bias": (ffn,), f"{layer}fc2.weight": (d, ffn),
                       f"{layer}fc2.bias": (d,)})
    names = {f"audio_tower.{k}": v for k, v in shapes.items()}
    names.update({"multi_modal_projector.ln_pre.weight": (d * stack,),
                  "multi_modal_projector.linear_1.weight": (hidden, d * stack),
                  "multi_modal_projector.ln_mid.weight": (hidden // 2,),
                  "multi_modal_projector.linear_2.weight": (text["hidden_size"], hidden // 2)})
    # LlamaForCausalLM (vllm/model_executor/models/llama.py): model.embed_tokens, model.layers.N.{self_attn.{q,k,v,
    # o}_proj, mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm}, model.norm, lm_head (untied)
    h, inter, vocab = text["hidden_size"], text["intermediate_size"], text["vocab_size"]
    kv = h // text["num_attention_heads"] * text["num_key_value_heads"]
    llm = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,), "lm_head.weight": (vocab, h)}
    for i in range(text["num_hidden_layers"]):
        layer = f"model.layers.{i}."
        llm.update({f"{layer}self_attn.q_proj.weight": (h, h), f"{layer}self_attn.k_proj.weight": (kv, h),
                    f"{layer}self_attn.v_proj.weight": (kv, h), f"{layer}self_attn.o_proj.weight": (h, h),
                    f"{layer}mlp.gate_proj.weight": (inter, h), f"{layer}mlp.up_proj.weight": (inter, h),
                    f"{layer}mlp.down_proj.weight": (h, inter), f"{layer}input_layernorm.weight": (h,),
                    f"{layer}post_attention_layernorm.weight": (h,)})
    names.update({f"language_model.{k}": v for k, v in llm.items()})
    return names


def test_config_has_what_vllms_ultravox_config_reads(model, exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "ultravox" and config["architectures"] == ["UltravoxModel"]
    assert config["audio_config"]["model_type"] == "whisper"
    assert "audio_model_id" not in config and "text_model_id" not in config  # the weights are all in the folder
    assert config["text_config"]["model_type"] == "llama"
    assert config["text_config"]["architectures"] == ["LlamaForCausalLM"]  # vLLM resolves the LLM class by this
    assert config["stack_factor"] == 4 and config["projector_act"] == "swiglu"
    assert config["projector_ln_mid"] is True and config["num_projector_layers"] == 0
    assert config["hidden_size"] == 2 * 64  # before SwiGLU halves it; default 2 x the LLM width
    assert config["audio_token_index"] == model.processor.audio_token_id
    # vLLM's UltravoxConfig builds both sub-configs through transformers' CONFIG_MAPPING: they must load there
    WhisperConfig(**config["audio_config"])
    generation = json.loads((exported / "generation_config.json").read_text())
    assert generation["eos_token_id"] in (model.processor.end_of_turn_ids, *model.processor.end_of_turn_ids)


def test_weights_are_the_names_and_shapes_vllm_loads(exported):
    config = json.loads((exported / "config.json").read_text())
    weights = load_file(str(exported / "model.safetensors"))
    assert {name: tuple(t.shape) for name, t in weights.items()} == expected_weights(config)


def test_round_trip_gives_identical_outputs(model, exported):
    back = load_ultravox(exported)
    conversations = [ask(clip) for clip in clips(0.7, 2.3)]
    batch, batch_back = model.processor(conversations), back.processor(conversations)
    assert torch.equal(batch["input_ids"], batch_back["input_ids"])
    torch.testing.assert_close(back(**batch_back).logits, model(**batch).logits, rtol=0, atol=0)
    assert torch.equal(back.generate(**batch_back, max_new_tokens=6), model.generate(**batch, max_new_tokens=6))


def vllm_reference_embeddings(folder, audio_values, audio_lens, audio_token_len) -> list[torch.Tensor]:
    """Audio embeddings as vLLM's UltravoxModel computes them for one clip (from its source, not from speechllm):
    UltravoxWhisperEncoder (conv1, conv2, positions sliced to the input, attention within each chunk's valid
    frames (audio_lens - 1) // 2 + 1, final layer norm), then UltravoxFeedForwardProjector (StackAudioFrames,
    ln_pre, linear_1, MulAndSilu x[:h] * silu(x[h:]), ln_mid, linear_2), cut to audio_token_len per chunk."""
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    tower = WhisperEncoder(WhisperConfig(**config["audio_config"])).eval()
    tower.load_state_dict({k[len("audio_tower."):]: v for k, v in weights.items() if k.startswith("audio_tower.")})
    proj = {k.split(".")[1]: v for k, v in weights.items() if k.startswith("multi_modal_projector.")}

    def rms(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

    out = []
    with torch.no_grad():
        for mel, n_mel, n_tokens in zip(audio_values, audio_lens.tolist(), audio_token_len.tolist()):
            x = torch.nn.functional.gelu(tower.conv1(mel[None, :, :n_mel]))
            x = torch.nn.functional.gelu(tower.conv2(x)).permute(0, 2, 1)
            x = x + tower.embed_positions.weight[: x.shape[1]]
            for layer in tower.layers:
                x = layer(x, None)  # one chunk alone: its frames are all valid
            x = tower.layer_norm(x)[0]
            stack = config["stack_factor"]
            x = torch.nn.functional.pad(x, (0, 0, 0, -len(x) % stack)).reshape(-1, x.shape[1] * stack)
            x = rms(x, proj["ln_pre"]) @ proj["linear_1"].T
            half = x.shape[-1] // 2
            x = rms(x[:, :half] * torch.nn.functional.silu(x[:, half:]), proj["ln_mid"]) @ proj["linear_2"].T
            out.append(x[:n_tokens])
    return out


def test_exported_processor_and_vllm_forward_give_our_prompt_and_audio_embeddings(model, exported):
    processor = AutoProcessor.from_pretrained(exported, trust_remote_code=True)  # as vLLM loads it
    for clip in clips(0.05, 3.1, 31.0):  # a hop-and-a-bit, a short clip, two 30 s chunks (1500 / stack 4 is whole)
        prompt = model.processor.render(model.processor._flatten(ask(clip))[0], add_generation_prompt=True)
        inputs = processor(text=prompt, audios=[clip], sampling_rate=16000, include_audio_num_chunks=True)
        ours = model.processor(ask(clip))
        assert inputs["input_ids"].tolist() == ours["input_ids"].tolist()
        assert inputs["audio_num_chunks"].tolist() == [math.ceil(len(clip) / 480000)]
        reference = torch.cat(vllm_reference_embeddings(exported, inputs["audio_values"], inputs["audio_lens"],
                                                        inputs["audio_token_len"]))
        with torch.no_grad():
            embeds, lengths = model.encode_audio(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
        assert len(reference) == int(lengths[0]) == model.audio_token_count(len(clip))
        torch.testing.assert_close(reference, embeds[0], atol=2e-5, rtol=1e-4)


def test_unpadded_whisper_is_the_same_alone_and_in_a_batch(model):
    waves = clips(0.3, 1.9)
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(2, int(lengths.max()))
    for row, w in enumerate(waves):
        batch[row, : len(w)] = torch.from_numpy(w)
    with torch.no_grad():
        together, frames = model.encoder(batch, lengths)
        for row, w in enumerate(waves):
            alone, _ = model.encoder(torch.from_numpy(w)[None], lengths[row : row + 1])
            torch.testing.assert_close(together[row, : frames[row]], alone[0], atol=1e-5, rtol=1e-5)


def spec_of(**sections) -> ModelSpec:
    return from_dict(ModelSpec, {"encoder": {"family": "whisper", "hf_config": TINY_ENCODERS["whisper"],
                                             "options": {"pad_to_window": False}},
                                 "connector": {"type": "ultravox"}, "llm": {"hf_config": tiny_llm_config(400)},
                                 **sections})


@pytest.mark.parametrize("sections, part, reason", [
    ({"encoder": {"family": "whisper", "hf_config": TINY_ENCODERS["whisper"]}}, "encoder:", "pad_to_window: false"),
    ({"encoder": {"family": "hubert", "hf_config": TINY_ENCODERS["hubert"]}}, "encoder:", "Whisper encoder only"),
    ({"encoder": {"family": "whisper_transcriber"}}, "encoder:", "transcribes"),
    ({"connector": {"type": "window_qformer"}}, "connector:", "Q-Former"),
    ({"connector": {"type": "stack_mlp"}}, "connector:", "type 'ultravox'"),
    ({"fusion_encoder": {"family": "hubert", "hf_config": TINY_ENCODERS["hubert"]}}, "fusion_encoder:", "one audio"),
    ({"llm": {"hf_config": {"model_type": "whisper"}, "coupling": "cross_attention"}}, "llm:", "cross-attention"),
    ({"llm": {"hf_config": {"model_type": "gpt2"}}}, "llm:", "'gpt2'"),
])
def test_what_cannot_be_exported_names_the_part_and_why(sections, part, reason):
    reasons = export_blockers(spec_of(**sections))
    assert len(reasons) == 1 and reasons[0].startswith(part) and reason in reasons[0], reasons
    assert export_blockers(spec_of()) == []


def test_a_model_that_cannot_be_exported_is_refused_before_writing(tmp_path):
    plain = tiny_model("whisper", "stack_mlp")  # 30 s padded Whisper + our own stacking connector
    with pytest.raises(ConfigError, match=r"(?s)encoder: .*connector: type 'stack_mlp'"):
        export_model(plain, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_exports_a_saved_model_with_lora_merged(tmp_path, capsys):
    lora = tiny_model("whisper", "ultravox", llm={"train": "lora"}, **EXPORTABLE)
    with torch.no_grad():  # make the adapters matter, or a forgotten merge would go unseen
        for name, parameter in lora.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(std=0.5)
    lora.save_pretrained(tmp_path / "saved")
    assert main(["export", str(tmp_path / "saved"), str(tmp_path / "out")]) == 0
    back = load_ultravox(tmp_path / "out")
    batch = lora.processor(ask(clips(1.0)[0]))
    torch.testing.assert_close(back(**batch).logits, lora(**batch).logits, atol=1e-4, rtol=1e-4)
    assert main(["export", str(tmp_path / "saved"), str(tmp_path / "x"), "--format", "onnx"]) == 1
    assert "unknown export format 'onnx'" in capsys.readouterr().err


def test_the_shipped_default_model_is_refused_naming_its_cross_attention(tmp_path, capsys):
    assert main(["export", "default", str(tmp_path / "out")]) == 1  # refused from its config, before any load
    err = capsys.readouterr().err
    assert "llm: coupling 'cross_attention'" in err and "connector: type 'identity'" in err
    assert not (tmp_path / "out").exists()
