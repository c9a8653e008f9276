"""Tiny random models for tests, examples and offline demos: built from configs in milliseconds.

Nothing here downloads anything; the weights are random, so outputs are meaningless but exercise
every code path of the real models.
"""

from __future__ import annotations

from .config import ModelSpec, from_dict

TINY_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "transcribe the audio please and give me the following information about the audio",
    '{"SpeechActivity": true, "Transcript": "hello world", "Gender": "Female", "Accent": "America"}',
    '{"Age": "Middle-Age", "Emotion": "Neutral", "Gender": "Male", "Accent": "South-East-Asia"}',
    "Young Senior Happy Sad Anger Frustrated Africa Celtic Europe Oceania South-Asia false",
    "summarize the following passage in one sentence. what did the speaker say? 0 1 2 3 4 5 6 7 8 9",
]


def tiny_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on a few sentences, with <s> </s> <pad> and no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TINY_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


TINY_ENCODERS = {
    "whisper": {
        "model_type": "whisper", "d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2,
        "decoder_layers": 1, "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
        "num_mel_bins": 80, "vocab_size": 51865, "max_source_positions": 1500,
    },
    "hubert": {
        "model_type": "hubert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "conv_dim": [16, 16], "conv_kernel": [10, 3], "conv_stride": [5, 64],
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
    },
    "wavlm": {
        "model_type": "wavlm", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "conv_dim": [16, 16], "conv_kernel": [10, 3], "conv_stride": [5, 64],
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, "feat_extract_norm": "layer",
        "do_stable_layer_norm": True, "num_buckets": 16, "max_bucket_distance": 50,
    },
    "wav2vec2": {
        "model_type": "wav2vec2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "conv_dim": [16, 16], "conv_kernel": [10, 3], "conv_stride": [5, 64],
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, "feat_extract_norm": "group",
    },
}


def tiny_llm_config(vocab_size: int, **overrides) -> dict:
    """A 2-layer Llama config; a large init range keeps random logits decisive (no near-ties)."""
    config = {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": vocab_size,
        "initializer_range": 0.2, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
        "max_position_embeddings": 4096,
    }
    return {**config, **overrides}


def tiny_spec(
    family: str = "whisper", connector_type: str = "stack_mlp", vocab_size: int = 400, **overrides
) -> ModelSpec:
    """A ModelSpec of a tiny random encoder + connector + Llama; `overrides` update its sections,
    e.g. `encoder={"train": "full"}` or `llm={"train": "lora"}`."""
    spec = {
        "encoder": {"family": family, "hf_config": TINY_ENCODERS[family]},
        "connector": {"type": connector_type, "options": {"stack": 4} if connector_type == "stack_mlp" else {}},
        "llm": {"hf_config": tiny_llm_config(vocab_size)},
    }
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return from_dict(ModelSpec, spec)


def tiny_model(family: str = "whisper", connector_type: str = "stack_mlp", seed: int = 0, **overrides):
    """A tiny random SpeechLLMForConditionalGeneration with its processor, in eval mode."""
    import torch

    from .models import SpeechLLMForConditionalGeneration

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    spec = tiny_spec(family, connector_type, vocab_size=len(tokenizer) + 8, **overrides)
    return SpeechLLMForConditionalGeneration.from_spec(spec, tokenizer=tokenizer).eval()


def fixed_heads(schema, answers: dict, confidence: float = 0.999, calibration: dict | None = None):
    """Attribute heads that answer `answers` ({field: value}) for every clip with probability `confidence`
    (read from the `pitch` feature, weights zero): e.g. {"SpeechActivity": False} for a model that hears no one.
    `calibration` ({field: {"method": "platt", "a", "b"}}) is attached to the heads it names."""
    import math

    import torch

    from .heads import AttributeHeads, field_values

    spec = {name: {"features": ["pitch"], "width": 4, **({"calibration": calibration[name]}
                                                          if calibration and name in calibration else {})}
            for name in answers}
    heads = AttributeHeads(schema, spec)
    for name, value in answers.items():
        values = field_values(schema.field(name))
        bias = torch.zeros(len(values))
        bias[values.index(value)] = math.log(confidence * (len(values) - 1) / (1 - confidence))
        heads.heads[name].linear.weight.data.zero_()
        heads.heads[name].linear.bias.data.copy_(bias)
    return heads.eval()


def free_port() -> int:
    """A loopback port free right now: multi-process tests take one each, so two test runs on one machine (or a
    killed run's lingering workers) never collide on a fixed port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_checked(command: list[str], **kwargs) -> None:
    """Run a test's subprocess; when it fails, the assertion shows the end of its stderr (not only its exit code)."""
    import subprocess

    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode:
        raise AssertionError(f"exit {result.returncode}: {' '.join(command[:8])} ...\n{result.stderr[-4000:]}")
