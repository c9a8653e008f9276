"""The frozen-encoder feature cache: what it returns is what the encoder computes, and a changed encoder misses."""

import torch

from speechllm.testing import tiny_model
from speechllm.training.feature_cache import FeatureCache
from tests.conftest import tone


def clip_batch(seconds=(0.5, 1.1, 0.8)):
    clips = [torch.from_numpy(tone(s, freq=200 + 110 * i, seed=i)[0]) for i, s in enumerate(seconds)]
    return torch.nn.utils.rnn.pad_sequence(clips, batch_first=True), torch.tensor([len(c) for c in clips])


@torch.no_grad()
def live_features(encoder, values, lengths) -> list[torch.Tensor]:
    features, frames = encoder(values, lengths)
    return [f[:n] for f, n in zip(features, frames.tolist())]


def cached_features(cache, values, lengths) -> list[torch.Tensor]:
    features, frames = cache.features(values, lengths)
    return [f[:n] for f, n in zip(features, frames.tolist())]


def test_cached_features_equal_the_encoders_output_when_written_and_when_read(tmp_path):
    encoder = tiny_model().encoder
    values, lengths = clip_batch()
    expected = live_features(encoder, values, lengths)
    cache = FeatureCache(tmp_path, encoder)
    for hits in (0, 3):  # the first call runs the encoder and writes; the second reads every clip from disk
        got = cached_features(cache, values, lengths)
        assert cache.hits == hits
        assert [len(f) for f in got] == [len(f) for f in expected]
        for g, e in zip(got, expected):
            assert torch.equal(g, e)
    # A clip alone reads the entry the batch wrote (entries are per clip, not per batch).
    alone = cached_features(cache, values[1:2, : lengths[1]], lengths[1:2])
    assert cache.hits == 4 and torch.equal(alone[0], expected[1])


def test_a_changed_encoder_never_reads_the_old_encoders_entries(tmp_path):
    encoder = tiny_model().encoder
    values, lengths = clip_batch()
    before = cached_features(FeatureCache(tmp_path, encoder), values, lengths)
    # Rows of one weight in another order: every per-tensor statistic (sum, norm) stays, the outputs change.
    name, weight = next((n, p) for n, p in encoder.named_parameters() if n.endswith("fc1.weight"))
    with torch.no_grad():
        weight.copy_(weight.flip(0))
    after = live_features(encoder, values, lengths)
    assert not torch.allclose(after[0], before[0])
    cache = FeatureCache(tmp_path, encoder)
    got = cached_features(cache, values, lengths)
    assert (cache.hits, cache.misses) == (0, 3), f"stale entries were read after changing {name}"
    for g, e in zip(got, after):
        assert torch.equal(g, e)


def test_an_encoder_with_other_options_or_feature_code_never_reads_old_entries():
    """Same weights, other features: a transcriber decoding with more beams, or a newer way of computing them."""
    from speechllm.testing import TINY_ENCODERS
    from speechllm.training.feature_cache import encoder_fingerprint

    def transcriber(**options):
        model = tiny_model("whisper", "token_bridge", encoder={"family": "whisper_transcriber",
                                                               "hf_config": TINY_ENCODERS["whisper"],
                                                               "options": options})
        return model.encoder

    greedy, beams = transcriber(), transcriber(beams=3)
    assert encoder_fingerprint(greedy) == encoder_fingerprint(transcriber())
    assert encoder_fingerprint(greedy) != encoder_fingerprint(beams)
    before = encoder_fingerprint(greedy)
    greedy.features_version += 1
    assert encoder_fingerprint(greedy) != before
