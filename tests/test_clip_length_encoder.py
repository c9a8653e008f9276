"""Whisper's encoder on the clip's own length (`pad_to_window: false`) or a bucket of it (`bucket_seconds`), in the
default model's design (Whisper's decoder reading the encoder through cross-attention): a clip answers the same
alone and in a batch of mixed lengths, a bucket never cuts audio, and the options survive save and load."""

import math

import numpy as np
import pytest
import torch

from speechllm.audio import SAMPLE_RATE
from speechllm.config import EncoderSpec
from speechllm.encoders import build_encoder
from speechllm.errors import ConfigError
from speechllm.models import SpeechLLMForConditionalGeneration
from speechllm.testing import TINY_ENCODERS, tiny_model
from speechllm.whisper_unpadded import bucketed_samples
from tests.conftest import tone

WINDOW = 30 * SAMPLE_RATE
CLIP_LENGTH = {"pad_to_window": False}
BUCKETED = {"pad_to_window": False, "bucket_seconds": 0.5}


def ask(clip):
    return [{"role": "user", "content": [{"type": "text", "text": "transcribe"}, {"type": "audio", "audio": clip}]}]


def cross_attention_model(options: dict):
    whisper = {**TINY_ENCODERS["whisper"], "decoder_start_token_id": 0, "pad_token_id": 2, "eos_token_id": 1,
               "bos_token_id": 0, "init_std": 0.3}
    return tiny_model(encoder={"options": options}, connector={"type": "identity", "options": {}},
                      llm={"hf_config": whisper, "coupling": "cross_attention"}).eval()


def encoder_with(options: dict):
    torch.manual_seed(0)
    return build_encoder(EncoderSpec(family="whisper", hf_config=TINY_ENCODERS["whisper"], options=options)).eval()


@pytest.mark.parametrize("options", [CLIP_LENGTH, BUCKETED], ids=["clip_length", "bucketed"])
def test_a_clip_answers_the_same_alone_and_in_a_batch_of_mixed_lengths(options):
    model = cross_attention_model(options)
    conversations = [ask(tone(s, freq=180 + 70 * i, seed=i)) for i, s in enumerate([0.6, 3.1, 1.45, 2.0])]
    greedy = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False}
    together = model.generate(**model.processor(conversations), **greedy)
    batched_logits = model(**model.processor(conversations)).logits
    for i, conversation in enumerate(conversations):
        alone = model.processor([conversation])
        assert together[i].tolist() == model.generate(**alone, **greedy)[0].tolist(), i
        width = alone["input_ids"].shape[1]  # prompts are left-padded to the longest
        torch.testing.assert_close(batched_logits[i, -width:], model(**alone).logits[0], atol=1e-4, rtol=1e-4)


def test_the_clip_length_encoder_reads_fewer_frames_than_the_window_and_changes_the_answer():
    """The option is live: a 1 s clip gives 50 frames instead of Whisper's 1500, and other logits."""
    windowed, clip_length = cross_attention_model({}), cross_attention_model(CLIP_LENGTH)
    clip = tone(1.0)
    assert clip_length.encoder.output_length(SAMPLE_RATE) == 50
    features, _ = clip_length.encoder(torch.tensor(clip[0])[None], torch.tensor([SAMPLE_RATE]))
    assert features.shape[1] == 50
    batch = windowed.processor([ask(clip)])
    assert not torch.allclose(windowed(**batch).logits, clip_length(**batch).logits, atol=1e-3)


@pytest.mark.parametrize("num_samples", [1, 319, 7999, 8000, 8001, 12345, 16000 * 29 + 1, WINDOW - 1, WINDOW])
def test_a_bucket_never_cuts_audio(num_samples):
    bucket = 8000
    padded = bucketed_samples(num_samples, bucket, WINDOW)
    assert num_samples <= padded <= WINDOW and (padded % bucket == 0 or padded == WINDOW)
    assert padded - num_samples < bucket
    encoder = encoder_with(BUCKETED)
    assert encoder.output_length(num_samples) == math.ceil(padded / 320) >= math.ceil(num_samples / 320)


def test_the_last_sample_of_a_bucketed_clip_reaches_the_features():
    """The clip's tail is encoded (not cut at a bucket edge): changing only its last samples changes its features,
    while audio past the clip's length (batch padding) changes nothing."""
    encoder = encoder_with(BUCKETED)
    n = 12345  # 0.77 s: one and a half buckets of 0.5 s, padded to 1 s
    clip = torch.tensor(tone(n / SAMPLE_RATE)[0][:n])
    tail_changed = clip.clone()
    tail_changed[-200:] += 0.5
    garbage_after = torch.cat([clip, torch.randn(5000)])
    with torch.no_grad():
        base, lengths = encoder(clip[None], torch.tensor([n]))
        changed, _ = encoder(tail_changed[None], torch.tensor([n]))
        padded, _ = encoder(garbage_after[None], torch.tensor([n]))
    assert lengths.tolist() == [50] == [base.shape[1]]
    assert not torch.allclose(base[0, 36:39], changed[0, 36:39], atol=1e-4)  # frames around sample 12345 / 320
    torch.testing.assert_close(base, padded, atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", [CLIP_LENGTH, BUCKETED], ids=["clip_length", "bucketed"])
def test_the_option_round_trips_through_save_and_load(options, tmp_path):
    model = cross_attention_model(options)
    model.save_pretrained(tmp_path / "saved")
    loaded = SpeechLLMForConditionalGeneration.from_pretrained(tmp_path / "saved").eval()
    assert loaded.config.model_spec.encoder.options == options
    assert loaded.encoder.frames == model.encoder.frames
    batch = model.processor([ask(tone(0.77))])
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


@pytest.mark.parametrize("options, message", [
    ({"bucket_seconds": 1.0}, "needs pad_to_window: false"),
    ({"pad_to_window": False, "bucket_seconds": 0}, "bucket_seconds must be"),
    ({"pad_to_window": False, "bucket_seconds": "1s"}, "bucket_seconds must be"),
    ({"pad_to_window": False, "bucket_seconds": 31}, "bucket_seconds must be"),
    ({"pad_to_window": False, "bucket": 1.0}, "unknown option"),
])
def test_bad_bucket_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        encoder_with(options)


def test_the_exporter_refuses_a_bucketed_encoder():
    """vLLM's Ultravox encodes each clip's own frames: a model trained on buckets would meet other features."""
    from speechllm.export.ultravox import export_blockers
    from speechllm.testing import tiny_spec

    spec = tiny_spec(encoder={"options": BUCKETED}, connector={"type": "ultravox", "options": {}})
    assert any("bucket_seconds" in reason for reason in export_blockers(spec))
    assert not any("bucket_seconds" in r for r in export_blockers(tiny_spec(encoder={"options": CLIP_LENGTH},
                                                                            connector={"type": "ultravox"})))


def test_heads_pool_only_the_clip_frames_of_a_bucket():
    model = cross_attention_model(BUCKETED)
    wave = torch.tensor(np.stack([tone(0.77)[0][:12320], tone(0.77)[0][:12320]]))
    (states, own), (last, frames) = model.encode_audio_layers(wave, torch.tensor([12320, 6000]))
    assert frames.tolist() == [50, 25] and own.tolist() == [39, 19]
