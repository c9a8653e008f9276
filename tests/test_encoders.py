"""Encoders: `output_length` is the truth, nothing is truncated, a clip's features do not depend on its
batch, and a frozen encoder gets no gradients. Tiny random models from speechllm.testing.TINY_ENCODERS."""

import functools
import math

import numpy as np
import pytest
import torch

from speechllm.audio import SAMPLE_RATE
from speechllm.config import EncoderSpec
from speechllm.encoders import FusedEncoder, build_encoder
from speechllm.errors import ConfigError
from speechllm.models import SpeechLLMForConditionalGeneration
from speechllm.testing import TINY_ENCODERS, tiny_model, tiny_spec, tiny_tokenizer

FAMILIES = sorted(TINY_ENCODERS)
# Whisper's window is fixed at 30 s; the SSL encoders get 1 s windows so "longer than a window" is cheap.
WINDOW_SECONDS = {"whisper": None, "hubert": 1.0, "wavlm": 1.0, "wav2vec2": 1.0}


@functools.cache
def build(family: str):
    torch.manual_seed(0)
    spec = EncoderSpec(family=family, hf_config=TINY_ENCODERS[family], window_seconds=WINDOW_SECONDS[family])
    return build_encoder(spec).eval()


@pytest.fixture(scope="module", params=FAMILIES)
def encoder(request):
    return build(request.param)


def clip_lengths(encoder) -> list[int]:
    """min_samples, odd lengths, and (SSL, 1 s windows) a tail window shorter than min_samples and 2.5 windows."""
    lengths = [encoder.min_samples, 333, 12345, 40001]
    return lengths + [SAMPLE_RATE + 5] if encoder.window_samples <= SAMPLE_RATE else lengths


def encode(encoder, clips):
    """Encode clips right-padded with random garbage (not zeros), so leaking padding changes the output."""
    batch = torch.randn(len(clips), max(len(c) for c in clips))
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = clip
    with torch.no_grad():
        return encoder(batch, torch.tensor([len(c) for c in clips]))


def clips_of(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=generator) * 0.1 for n in lengths]


# -- lengths ---------------------------------------------------------------------------------------------


def test_output_length_matches_real_output(encoder):
    lengths = clip_lengths(encoder) + [encoder.min_samples + 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 3 * SAMPLE_RATE - 1]
    features, feature_lengths = encode(encoder, clips_of(lengths))
    expected = [encoder.output_length(n) for n in lengths]
    assert feature_lengths.tolist() == expected
    assert features.shape == (len(lengths), max(expected), encoder.output_dim)
    assert encoder.output_length(encoder.min_samples) == 1
    assert encoder.output_length(SAMPLE_RATE) == round(encoder.frame_rate)


def test_frame_count_grows_with_duration(encoder):
    # No silent truncation: ten windows give ten windows' worth of frames, and more audio never gives fewer.
    window = encoder.window_samples
    assert encoder.output_length(10 * window) == 10 * encoder.output_length(window)
    counts = [encoder.output_length(n) for n in range(window - 2000, 3 * window + 2000, 997)]
    assert counts == sorted(counts) and len(set(counts)) > 1
    assert abs(encoder.output_length(600 * SAMPLE_RATE) - 600 * encoder.frame_rate) <= 600 / (window / SAMPLE_RATE)


def test_whisper_counts_a_partial_frame():
    # One frame per 320 samples, and a partial tail frame still counts: ceil, never floor.
    encoder = build("whisper")
    for n in [1, 319, 321, 12345, 30 * SAMPLE_RATE - 1, 31 * SAMPLE_RATE + 1, 600 * SAMPLE_RATE + 7]:
        assert encoder.output_length(n) == math.ceil(n / 320), n


def test_whisper_31_seconds_takes_two_windows():
    encoder = build("whisper")
    n = 31 * SAMPLE_RATE
    assert encoder.frames.window_sizes(n) == [30 * SAMPLE_RATE, SAMPLE_RATE]
    features, lengths = encode(encoder, clips_of([n]))
    assert lengths.tolist() == [encoder.output_length(n)] == [math.ceil(n / 320)]
    assert features.shape[1] == 1550


# -- batching -------------------------------------------------------------------------------------------


def test_alone_and_batched_are_identical(encoder):
    clips = clips_of(clip_lengths(encoder), seed=1)
    batched, batched_lengths = encode(encoder, clips)
    for row, clip in enumerate(clips):
        alone, alone_lengths = encode(encoder, [clip])
        n = encoder.output_length(len(clip))
        assert alone.shape[1] == alone_lengths[0] == batched_lengths[row] == n
        torch.testing.assert_close(batched[row, :n], alone[0], atol=1e-4, rtol=0)


def test_all_layers_end_with_the_output_and_keep_the_lengths(encoder):
    clips = clips_of(clip_lengths(encoder), seed=4)
    batch = torch.zeros(len(clips), max(len(c) for c in clips))
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = clip
    lengths = torch.tensor([len(c) for c in clips])
    with torch.no_grad():
        output, output_lengths = encoder(batch, lengths)
        layers, layer_lengths = encoder(batch, lengths, all_layers=True)
    assert layer_lengths.tolist() == output_lengths.tolist()
    assert layers.shape == (*output.shape[:2], encoder.model.config.num_hidden_layers + 1, output.shape[-1])
    torch.testing.assert_close(layers[:, :, -1], output)
    assert not torch.allclose(layers[:, :, 0], layers[:, :, -1])  # the layers really differ


def test_rebuilds_from_its_own_hf_config(encoder):
    # Checkpoints rebuild encoders from `hf_config()`, which carries model_type.
    rebuilt = build_encoder(EncoderSpec(**{**vars(encoder.spec), "hf_config": encoder.hf_config()}))
    rebuilt.load_state_dict(encoder.state_dict())
    clips = clips_of([12345], seed=2)
    torch.testing.assert_close(encode(rebuilt.eval(), clips), encode(encoder, clips))


# -- fusion ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fused():
    return FusedEncoder(build("whisper"), build("hubert"))


def test_fused_encoder_has_no_single_layer_stack(fused):
    with pytest.raises(ConfigError, match="fused encoder"):
        fused(torch.zeros(1, 16000), torch.tensor([16000]), all_layers=True)


def test_fused_encoder_concatenates_and_follows_the_primary(fused):
    whisper, hubert = fused.primary, fused.secondary
    assert fused.output_dim == whisper.output_dim + hubert.output_dim
    assert fused.frame_rate == whisper.frame_rate
    assert fused.min_samples == max(whisper.min_samples, hubert.min_samples)
    lengths = [fused.min_samples, 12345, 40001]
    clips = clips_of(lengths, seed=3)
    features, feature_lengths = encode(fused, clips)
    primary, _ = encode(whisper, clips)
    secondary, secondary_lengths = encode(hubert, clips)
    assert feature_lengths.tolist() == [fused.output_length(n) for n in lengths]
    assert feature_lengths.tolist() == [whisper.output_length(n) for n in lengths]
    assert features.shape[-1] == fused.output_dim
    for row, clip in enumerate(clips):
        n = feature_lengths[row]
        alone, _ = encode(fused, [clip])
        torch.testing.assert_close(features[row, :n], alone[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(alone[0, :, : whisper.output_dim], primary[row, :n], atol=1e-4, rtol=0)
        # Both run at 50 Hz, so fused frame i carries HuBERT's frame i in time (its last one past its end).
        index = torch.arange(n).clamp(max=int(secondary_lengths[row]) - 1)
        torch.testing.assert_close(alone[0, :, whisper.output_dim :], secondary[row, index], atol=1e-4, rtol=0)


# -- training modes on the composite model ------------------------------------------------------------


def conversation():
    audio = (np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype("float32") * 0.1, SAMPLE_RATE)
    return [
        {"role": "user", "content": [{"type": "audio", "audio": audio}]},
        {"role": "assistant", "content": "hello"},
    ]


def backward(model):
    model.train()
    batch = model.processor(conversation(), add_generation_prompt=False)
    model(**batch).loss.backward()
    return model


def model_with_encoder_training(train: str):
    # tiny_model(encoder=...) is the family name, so an "encoder" override cannot go through it.
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    spec = tiny_spec("whisper", vocab_size=len(tokenizer) + 8)
    spec.encoder.train = train
    return SpeechLLMForConditionalGeneration.from_spec(spec, tokenizer=tokenizer)


def test_frozen_encoder_gets_no_gradients_and_stays_in_eval_mode():
    model = backward(tiny_model())
    assert model.config.model_spec.encoder.train == "frozen"
    encoder_params = list(model.encoder.parameters())
    assert encoder_params and not any(p.requires_grad for p in encoder_params)
    assert all(p.grad is None for p in encoder_params)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.connector.parameters())
    assert model.training and model.connector.training
    assert not any(m.training for m in model.encoder.modules())


def test_fully_trained_encoder_gets_gradients():
    model = backward(model_with_encoder_training("full"))
    assert model.encoder.training
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_lora_encoder_trains_only_its_adapters():
    model = backward(model_with_encoder_training("lora"))
    named = dict(model.encoder.named_parameters())
    lora = {n for n in named if "lora_" in n}
    assert lora
    assert {n for n, p in named.items() if p.requires_grad} == lora
    assert {n for n, p in named.items() if p.grad is not None} == lora


# -- configuration errors -------------------------------------------------------------------------------


def test_unknown_family_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_encoder"):
        build_encoder(EncoderSpec(family="no_such_encoder", hf_config={}))


def test_encoder_without_weights_or_config_is_a_config_error():
    with pytest.raises(ConfigError, match="name_or_path"):
        build_encoder(EncoderSpec(family="hubert"))


def test_whisper_window_over_30_seconds_is_a_config_error():
    with pytest.raises(ConfigError, match="window_seconds"):
        build_encoder(EncoderSpec(family="whisper", hf_config=TINY_ENCODERS["whisper"], window_seconds=31.0))
