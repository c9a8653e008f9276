"""Each part of a loaded model in the dtype its device runs fastest (speechllm.models.precision): fp32 everywhere
on a CPU without native bf16; on one with it, the LLM in bf16 and the encoder and connector in fp32, answering
within a stated tolerance of fp32 for every coupling."""

import numpy as np
import pytest
import torch

import speechllm
from speechllm.audio import load_conversation_audio
from speechllm.pretrained import precision
from speechllm.testing import TINY_ENCODERS, tiny_model

RATE = 16000
# bf16 keeps 8 bits of mantissa: the tiny random models' logits moved by 1.4% (prefix) to 3.3% (cross-attention,
# token_bridge) of their largest magnitude.
LOGIT_TOLERANCE = 0.05  # of the fp32 logits' largest magnitude


def prefix_model():
    return tiny_model()


def cross_attention_model():
    whisper = {**TINY_ENCODERS["whisper"], "decoder_start_token_id": 0, "pad_token_id": 2, "eos_token_id": 1,
               "bos_token_id": 0, "init_std": 0.3}
    return tiny_model(connector={"type": "identity", "options": {}},
                      llm={"hf_config": whisper, "coupling": "cross_attention"})


def token_bridge_model():
    whisper = {**TINY_ENCODERS["whisper"], "init_std": 0.5}
    return tiny_model("whisper", "token_bridge", encoder={"family": "whisper_transcriber", "hf_config": whisper,
                                                          "options": {"tokens_per_second": 3.0, "min_tokens": 4}})


MODELS = {"prefix": prefix_model, "cross_attention": cross_attention_model, "token_bridge": token_bridge_model}


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    MODELS[request.param]().save_pretrained(path)
    return path


def ask(model, seconds=(1.3, 2.1)):
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(int(s * RATE)) * 0.1).astype(np.float32) for s in seconds]
    conversations = [[{"role": "user", "content": [{"type": "text", "text": "Transcribe: "},
                                                   {"type": "audio", "audio": (c, RATE)}]}] for c in clips]
    return model.processor(load_conversation_audio(conversations))


def dtypes(model):
    """{part: the dtype of its weights}, for the parts that have weights (an identity connector has none)."""
    parts = {"encoder": model.encoder, "connector": model.connector, "llm": model.language_model}
    found = {name: {p.dtype for p in part.parameters()} for name, part in parts.items()}
    return {name: kinds.pop() if len(kinds) == 1 else kinds for name, kinds in found.items() if kinds}


def expect(model, **parts):
    return {name: dtype for name, dtype in parts.items() if name in dtypes(model)}


def test_a_cpu_without_native_bf16_loads_every_part_in_fp32(saved, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    model = speechllm.load(saved, device="cpu")
    assert dtypes(model) == expect(model, encoder=torch.float32, connector=torch.float32, llm=torch.float32)


def test_a_cpu_with_native_bf16_runs_the_llm_in_bf16_and_answers_as_fp32_does(saved, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    mixed = speechllm.load(saved, device="cpu")
    full = speechllm.load(saved, device="cpu", dtype=torch.float32)  # forced: the same on any CPU
    assert dtypes(mixed) == expect(mixed, encoder=torch.float32, connector=torch.float32, llm=torch.bfloat16)
    assert dtypes(full) == expect(full, encoder=torch.float32, connector=torch.float32, llm=torch.float32)
    batch = ask(full)
    with torch.no_grad():
        expected = full(**batch).logits.float()
        got = mixed(**batch).logits.float()
    worst = (got - expected).abs().max() / expected.abs().max()
    assert worst < LOGIT_TOLERANCE, f"bf16 logits off by {float(worst):.3f} of fp32's largest"
    answer = mixed.generate(**batch, max_new_tokens=4, do_sample=False)
    assert answer.shape == (2, 4)


def test_a_model_whose_config_keeps_fp32_on_cpus_loads_in_fp32_even_with_native_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    model = prefix_model()
    model.config.model_spec.llm.cpu_precision = "fp32"  # as the packaged models say (bench/precision.py)
    model.save_pretrained(tmp_path)
    loaded = speechllm.load(tmp_path, device="cpu")
    assert dtypes(loaded) == expect(loaded, encoder=torch.float32, connector=torch.float32, llm=torch.float32)
