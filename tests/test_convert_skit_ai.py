"""skit-ai SpeechLLM checkpoints convert to speechllm models that answer token for token as their code does.

The checkpoints here are tiny random ones laid out as skit-ai's hub repos and trainer lay them out (read from
github.com/skit-ai/SpeechLLM); `their_answer` is a forward pass written from that code's structure, independent of
speechllm's modules.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tone
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCausalLM, AutoTokenizer

import speechllm
from speechllm.convert import convert, generate_as_released
from speechllm.convert.released import released_inputs
from speechllm.convert.skit_ai import released_prompt
from speechllm.errors import ConfigError
from speechllm.testing import TINY_ENCODERS, tiny_llm_config, tiny_tokenizer

INSTRUCTION = "Give me the following information about the audio [SpeechActivity, Transcript, Gender]"


def their_parts(tmp_path, family):
    """Folders holding the configs their config.json names (encoder, LLM + tokenizer, audio processor)."""
    from transformers import LlamaConfig, Wav2Vec2FeatureExtractor

    encoder_dir, llm_dir, processor_dir = tmp_path / "encoder", tmp_path / "llm", tmp_path / "processor"
    AutoConfig.for_model(**TINY_ENCODERS[family]).save_pretrained(encoder_dir)
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(llm_dir)
    LlamaConfig(**tiny_llm_config(len(tokenizer) + 8)).save_pretrained(llm_dir)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(processor_dir)
    return {"audio_encoder_name": str(encoder_dir), "llm_model_name": str(llm_dir),
            "audio_processor_name": str(processor_dir)}


def their_weights(names, last_kernel, old_weight_norm, seed=0):
    """A state dict in their layout: audio_encoder.encoder.*, connector.layer.{1,3,5}.*, llm_model.*"""
    torch.manual_seed(seed)
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(names["audio_encoder_name"]))
    llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(names["llm_model_name"]))
    enc_dim, llm_dim = encoder.config.hidden_size, llm.config.hidden_size
    state = {f"audio_encoder.encoder.{k}": v for k, v in encoder.state_dict().items()}
    if old_weight_norm:  # as torch's old weight_norm saved HuBERT's positional convolution
        state = {k.replace("parametrizations.weight.original0", "weight_g")
                 .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
    for index, (out_dim, in_dim, kernel) in {1: (llm_dim // 2, enc_dim, 5), 3: (llm_dim, llm_dim // 2, 5),
                                             5: (llm_dim, llm_dim, last_kernel)}.items():
        state[f"connector.layer.{index}.weight"] = torch.randn(out_dim, in_dim, kernel) * 0.1
        state[f"connector.layer.{index}.bias"] = torch.randn(out_dim) * 0.1
    state.update({f"llm_model.{k}": v for k, v in llm.state_dict().items()})
    return state


def hub_layout(tmp_path, family="hubert", last_kernel=3, old_weight_norm=True):
    """A folder as skit-ai/speechllm-2B (-1.5B) holds it: config.json naming the parts, model.safetensors."""
    names = their_parts(tmp_path, family)
    folder = tmp_path / "hub"
    folder.mkdir()
    save_file(their_weights(names, last_kernel, old_weight_norm), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "custom_model", **names}))
    return folder


def conv_connector(state, features):
    """Their CNNConnector: ReLU, conv k5, ReLU, conv k5 stride 2, ReLU, conv, on (batch, frames, dim)."""
    x = features.transpose(1, 2)
    for index, stride in ((1, 1), (3, 2), (5, 1)):
        x = F.conv1d(F.relu(x), state[f"connector.layer.{index}.weight"], state[f"connector.layer.{index}.bias"],
                     stride=stride)
    return x.transpose(1, 2)


def strip(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@torch.no_grad()
def their_answer(names, state, audio, instruction, llm=None, max_new_tokens=8):
    """(logits over the prompt, greedy new tokens) as their generate_meta computes them."""
    processor = AutoFeatureExtractor.from_pretrained(names["audio_processor_name"])
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(names["audio_encoder_name"])).eval()
    encoder.load_state_dict(strip(state, "audio_encoder.encoder."))
    tokenizer = AutoTokenizer.from_pretrained(names["llm_model_name"])
    if llm is None:
        llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(names["llm_model_name"]))
        llm.load_state_dict(strip(state, "llm_model."))
    llm.eval()
    values = processor(audio, return_tensors="pt", sampling_rate=16000).input_values
    speech = conv_connector(state, encoder(values).last_hidden_state)
    pieces = [f"Instruction:\n{instruction}\n\nInput: \n<speech>", "</speech>\n\nOutput:", "\n<s>"]
    ids = [tokenizer(p, add_special_tokens=False, return_tensors="pt").input_ids for p in pieces]
    embed = llm.get_input_embeddings()
    embeds = torch.cat([embed(ids[0]), speech, embed(ids[1]), embed(ids[2])], dim=1)
    logits = llm(inputs_embeds=embeds).logits
    tokens = llm.generate(inputs_embeds=embeds, max_new_tokens=max_new_tokens, do_sample=False,
                          pad_token_id=tokenizer.eos_token_id)
    return logits[0], tokens[0].tolist()


def our_answer(model_dir, audio, instruction):
    model = speechllm.load(model_dir, device="cpu")
    batch = released_inputs(model, released_prompt(instruction), (audio, 16000))
    with torch.no_grad():
        logits = model(**batch).logits[0]
    tokens, _ = generate_as_released(model, "skit-ai", (audio, 16000), instruction, max_new_tokens=8)
    return logits, tokens


@pytest.mark.parametrize("family,last_kernel,old_weight_norm", [("hubert", 3, True), ("wavlm", 5, False)])
def test_converted_hub_checkpoint_answers_as_their_code(tmp_path, family, last_kernel, old_weight_norm):
    folder = hub_layout(tmp_path, family, last_kernel, old_weight_norm)
    convert(folder, tmp_path / "out", "skit-ai")
    audio, _ = tone(1.3)
    names = json.loads((folder / "config.json").read_text())
    theirs_logits, theirs_tokens = their_answer(names, load_file(str(folder / "model.safetensors")), audio, INSTRUCTION)
    ours_logits, ours_tokens = our_answer(tmp_path / "out", audio, INSTRUCTION)
    assert ours_logits.shape == theirs_logits.shape  # same prompt length: same audio token count and text ids
    torch.testing.assert_close(ours_logits, theirs_logits, atol=2e-4, rtol=1e-4)
    assert ours_tokens == theirs_tokens
    spec = json.loads((tmp_path / "out" / "config.json").read_text())["spec"]
    assert spec["connector"] == {"type": "speechllm_cnn", "options": {"last_kernel": last_kernel}, "train": "frozen"}
    assert spec["encoder"]["normalize"] is True  # their audio processor's do_normalize


def test_trainer_checkpoint_with_lora_is_folded(tmp_path):
    """Their Lightning trainer saves peft's unmerged keys; folded with lora_alpha / lora_r it answers as peft does."""
    from peft import LoraConfig, get_peft_model

    names = their_parts(tmp_path, "hubert")
    state = their_weights(names, 3, old_weight_norm=False)
    base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(names["llm_model_name"]))
    base.load_state_dict(strip(state, "llm_model."))
    peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)  # trained adapters: zero-initialised B would fold to nothing
    state = {k: v for k, v in state.items() if not k.startswith("llm_model.")}
    state.update({f"llm_model.{k}": v for k, v in peft_model.state_dict().items()})
    hparams = {"lora_r": 8, "lora_alpha": 16, "audio_encoder_name": names["audio_encoder_name"],
               "llm_name": names["llm_model_name"]}
    torch.save({"state_dict": state, "hyper_parameters": hparams}, tmp_path / "best.ckpt")
    convert(tmp_path / "best.ckpt", tmp_path / "out", "skit-ai", normalize=True)
    audio, _ = tone(1.1, freq=330.0)
    theirs_logits, theirs_tokens = their_answer(names, state, audio, INSTRUCTION, llm=peft_model)
    ours_logits, ours_tokens = our_answer(tmp_path / "out", audio, INSTRUCTION)
    torch.testing.assert_close(ours_logits, theirs_logits, atol=2e-4, rtol=1e-4)
    assert ours_tokens == theirs_tokens


def test_weights_outside_their_layout_are_refused(tmp_path):
    folder = hub_layout(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state["projector.weight"] = torch.zeros(2, 2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ConfigError, match="outside skit-ai's layout"):
        convert(folder, tmp_path / "out", "skit-ai")


def test_unknown_format_names_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="skit-ai"):
        convert(tmp_path, tmp_path / "out", "no-such-project")


def test_cli_converts_and_the_folder_loads(tmp_path, capsys):
    from speechllm.cli import main

    folder = hub_layout(tmp_path)
    assert main(["convert", str(folder), str(tmp_path / "out"), "--from", "skit-ai", "--no-normalize"]) == 0
    model = speechllm.load(tmp_path / "out", device="cpu")
    assert model.config.model_spec.encoder.normalize is False  # the flag beat their processor's do_normalize
    assert json.loads((tmp_path / "out" / "conversion.json").read_text())["from"] == "skit-ai"
    assert main(["convert", str(folder), str(tmp_path / "x"), "--from", "skit-ai", "--llm", "some/llm"]) == 1
    assert "do not apply to 'skit-ai'" in capsys.readouterr().err


def test_a_hub_id_with_the_hub_off_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="cannot download 'skit-ai/speechllm-2B' from the hub"):
        convert("skit-ai/speechllm-2B", tmp_path / "out", "skit-ai")


def test_a_connector_that_does_not_fit_the_encoder_is_refused(tmp_path):
    folder = hub_layout(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state["connector.layer.1.weight"] = torch.zeros(32, 48, 5)  # reads 48 channels; the encoder gives 32
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ConfigError, match="connector.net.1.weight: the checkpoint's shape"):
        convert(folder, tmp_path / "out", "skit-ai")
