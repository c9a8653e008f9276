"""Connectors: `output_length` is the truth, padding never leaks, options are checked.

Every test that takes the `connector` fixture runs for every entry of CONNECTORS, so a new connector is
tested as soon as it is registered.
"""

import pytest
import torch

from speechllm.config import ConnectorSpec
from speechllm.connectors import CONNECTORS, build_connector
from speechllm.errors import ConfigError

IN_DIM, OUT_DIM, FRAME_RATE = 32, 32, 50.0  # equal widths so the identity connector runs too
LENGTHS = [1, 2, 3, 7, 13, 50, 333, 1501]


def make(kind, frame_rate=FRAME_RATE, **options):
    torch.manual_seed(0)
    connector = build_connector(ConnectorSpec(type=kind, options=options), IN_DIM, OUT_DIM, frame_rate).eval()
    if hasattr(connector, "bind"):  # built around its encoder and LLM (token_bridge): tiny random ones
        bind_to_tiny_models(connector)
    return connector


def bind_to_tiny_models(connector):
    from transformers import AutoConfig, AutoModelForCausalLM

    from speechllm.config import EncoderSpec
    from speechllm.encoders import build_encoder
    from speechllm.testing import TINY_ENCODERS, tiny_llm_config, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    whisper = {**TINY_ENCODERS["whisper"], "d_model": IN_DIM}
    encoder = build_encoder(EncoderSpec(family="whisper_transcriber", hf_config=whisper))
    llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**tiny_llm_config(len(tokenizer), hidden_size=OUT_DIM)))
    connector.bind(encoder, llm, tokenizer, whisper_tokenizer=tokenizer)


@pytest.fixture(scope="module", params=sorted(CONNECTORS))
def connector(request):
    return make(request.param)


def run(connector, features, lengths):
    with torch.no_grad():
        return connector(features, torch.tensor(lengths))


def padded_batch(clips):
    """Clips right-padded with random garbage, not zeros: a leak shows up as a different output."""
    batch = torch.randn(len(clips), max(len(c) for c in clips), IN_DIM) * 100
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = clip
    return batch


@pytest.mark.parametrize("frames", LENGTHS)
def test_output_length_matches_real_output(connector, frames):
    out, lengths = run(connector, torch.randn(1, frames, IN_DIM), [frames])
    expected = connector.output_length(frames)
    assert expected >= 1
    assert out.shape == (1, expected, OUT_DIM)
    assert lengths.tolist() == [expected]
    assert torch.isfinite(out).all()


def test_output_length_grows_with_input(connector):
    counts = [connector.output_length(n) for n in range(1, 400)]
    assert counts == sorted(counts) and counts[-1] > counts[0]


@pytest.mark.parametrize("frames", [1, 7, 13, 14, 50, 333])
def test_the_last_frames_reach_the_output(connector, frames):
    # Nothing silently dropped at the end (SpeechLLM's unpadded stride-2 conv may skip one frame, so two).
    torch.manual_seed(4)
    x = torch.randn(1, frames, IN_DIM)
    base, _ = run(connector, x, [frames])
    x[0, -2:] = torch.randn(min(2, frames), IN_DIM)
    moved, _ = run(connector, x, [frames])
    assert not torch.allclose(base, moved, atol=1e-6)


def test_padding_never_leaks(connector):
    torch.manual_seed(1)
    clips = [torch.randn(n, IN_DIM) for n in [1, 7, 50, 333]]
    out, lengths = run(connector, padded_batch(clips), [len(c) for c in clips])
    for row, clip in enumerate(clips):
        alone, alone_lengths = run(connector, clip[None], [len(clip)])
        n = connector.output_length(len(clip))
        assert lengths[row] == alone_lengths[0] == n
        torch.testing.assert_close(out[row, :n], alone[0, :n], atol=1e-5, rtol=0)


def test_output_does_not_depend_on_longest_clip(connector):
    torch.manual_seed(2)
    clip = torch.randn(20, IN_DIM)
    outputs = []
    for other in [5, 40, 1501]:
        out, lengths = run(connector, padded_batch([clip, torch.randn(other, IN_DIM)]), [20, other])
        outputs.append(out[0, : lengths[0]])
    assert all(o.shape == outputs[0].shape for o in outputs)
    for o in outputs[1:]:
        torch.testing.assert_close(o, outputs[0], atol=1e-5, rtol=0)


# -- window Q-Former ---------------------------------------------------------------------------------


@pytest.mark.parametrize("frame_rate, window, stride", [(50.0, 20, 10), (25.0, 10, 5), (100.0, 40, 20)])
def test_window_qformer_seconds_map_to_frames(frame_rate, window, stride):
    connector = make("window_qformer", frame_rate, window_seconds=0.4, stride_seconds=0.2, queries=3)
    assert (connector.window, connector.stride) == (window, stride)
    frames = 5 * window
    windows = (frames - window) // stride + 1
    assert connector.output_length(frames) == 3 * windows
    # Tokens of window j see exactly frames [j*stride, j*stride+window): change a frame, only those windows move.
    torch.manual_seed(3)
    x = torch.randn(1, frames, IN_DIM)
    base, _ = run(connector, x, [frames])
    frame = 2 * stride + 1
    x[0, frame] = torch.randn(IN_DIM) * 3  # not a constant shift: a LayerNorm would cancel that
    moved, _ = run(connector, x, [frames])
    changed = (moved - base).abs().amax(-1)[0].reshape(windows, 3).amax(-1) > 1e-6
    expected = [j * stride <= frame < j * stride + window for j in range(windows)]
    assert changed.tolist() == expected


@pytest.mark.parametrize("queries", [1, 2, 5])
def test_window_qformer_gives_queries_tokens_per_window(queries):
    connector = make("window_qformer", queries=queries)
    one_window = connector.window
    assert connector.output_length(one_window) == queries
    assert connector.output_length(one_window + connector.stride) == 2 * queries
    out, lengths = run(connector, torch.randn(1, one_window, IN_DIM), [one_window])
    assert out.shape[1] == lengths[0] == queries


def test_window_qformer_masks_the_padding_of_a_short_window():
    # A 5-frame clip attends to its 5 frames only, however many zero frames pad its window out.
    small = make("window_qformer", window_seconds=0.2, stride_seconds=0.2)
    large = make("window_qformer", window_seconds=1.0, stride_seconds=0.2)
    large.load_state_dict(small.state_dict())
    clip = torch.randn(1, 5, IN_DIM)
    torch.testing.assert_close(run(small, clip, [5])[0], run(large, clip, [5])[0], atol=1e-5, rtol=0)


def test_window_qformer_takes_a_tenth_of_a_second():
    # Self-Powered LSM sized its window from the batch and crashed on clips under ~0.9 s.
    connector = make("window_qformer")
    frames = round(0.1 * FRAME_RATE)
    out, lengths = run(connector, torch.randn(1, frames, IN_DIM), [frames])
    assert out.shape == (1, len(connector.queries), OUT_DIM) and lengths.tolist() == [len(connector.queries)]
    assert torch.isfinite(out).all()


# -- configuration errors ----------------------------------------------------------------------------


def test_unknown_connector_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_connector"):
        make("no_such_connector")


@pytest.mark.parametrize(
    "kind, options, named",
    [
        ("stack_mlp", {"stak": 4}, "stak"),
        ("linear", {"hidden_dim": 8}, "hidden_dim"),
        ("stack_mlp", {"stack": 0}, "stack"),
        ("stack_mlp", {"stack": 2.5}, "stack"),
        ("stack_mlp", {"stack": "8"}, "stack"),
        ("pool_linear", {"stride": 0}, "stride"),
        ("pool_linear", {"kernel": 4, "stride": 8}, "stride"),
        ("speechllm_cnn", {"last_kernel": 0}, "last_kernel"),
        ("window_qformer", {"queries": 0}, "queries"),
        ("window_qformer", {"window_seconds": -1.0}, "window_seconds"),
        ("window_qformer", {"window_seconds": 0.1, "stride_seconds": 0.5}, "stride"),
        ("window_qformer", {"hidden_dim": 30, "heads": 4}, "heads"),
        ("mlp", {"hidden_dim": 0}, "hidden_dim"),
    ],
)
def test_bad_options_are_config_errors_naming_the_problem(kind, options, named):
    with pytest.raises(ConfigError, match=named):
        make(kind, **options)


def test_good_options_are_accepted():
    assert make("stack_mlp", stack=4, hidden_dim=None, output_norm=False).stack == 4
    assert make("window_qformer", window_seconds=1, stride_seconds=0.5).window == 50


# -- whole windows only (converted checkpoints) -------------------------------------------------------


@pytest.mark.parametrize("frames", [3, 8, 9, 11, 12, 50, 333])
def test_pool_linear_without_partial_window_pools_as_avgpool1d(frames):
    # Kang & Roy's released encoder pools with torch's AvgPool1d(8, 4), which drops a last partial window.
    connector = make("pool_linear", partial_window=False)
    x = torch.randn(1, frames, IN_DIM)
    out, lengths = run(connector, x, [frames])
    if frames < 8:  # too short for AvgPool1d: one token from the zero-padded window
        assert lengths.tolist() == [1]
        return
    with torch.no_grad():
        expected = connector.proj(torch.nn.functional.avg_pool1d(x.transpose(1, 2), 8, 4).transpose(1, 2))
    assert lengths.tolist() == [expected.shape[1]]
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("partial, tokens", [(True, 4), (False, 3)])
def test_blip2_qformer_partial_window_option(partial, tokens):
    connector = make("window_blip2_qformer", window=17, stride=17, hidden_dim=64, heads=1, intermediate_dim=128,
                     partial_window=partial)
    out, lengths = run(connector, torch.randn(1, 3 * 17 + 4, IN_DIM), [3 * 17 + 4])
    assert out.shape[1] == lengths.item() == tokens
