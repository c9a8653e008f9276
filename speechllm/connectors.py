"""Connectors: turn encoder frames into LLM input embeddings. One small class each, one registry.

Every connector takes (features (batch, frames, in_dim), lengths) and returns (embeddings
(batch, tokens, out_dim), token lengths), and knows `output_length(num_frames)`, which agrees with
its real output for every length. The count is a static `token_count` of the constructor's options, so
`connector_output_length(spec, ...)` gives it without building the connector (the processor needs no
weights). Frames past a clip's length are zeroed before use, and inputs are zero-padded on the right to
whatever a layer needs, so a clip's output is the same alone and inside a padded batch.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConnectorSpec
from .errors import ConfigError

CONNECTORS: dict[str, type["Connector"]] = {}


def register_connector(name: str) -> Callable:
    def register(cls):
        CONNECTORS[name] = cls
        cls.name = name
        return cls

    return register


def build_connector(spec: ConnectorSpec, input_dim: int, output_dim: int, frame_rate: float) -> "Connector":
    if spec.type not in CONNECTORS:
        raise ConfigError(f"unknown connector {spec.type!r}; known: {sorted(CONNECTORS)}")
    check_options(CONNECTORS[spec.type], spec.options)
    try:
        return CONNECTORS[spec.type](input_dim, output_dim, frame_rate=frame_rate, **spec.options)
    except TypeError as error:
        raise ConfigError(f"connector {spec.type!r}: bad options {spec.options}: {error}") from None


def connector_output_length(spec: ConnectorSpec, frame_rate: float, num_frames: int) -> int:
    """Tokens the connector `spec` describes gives for `num_frames` encoder frames, without building it."""
    if spec.type not in CONNECTORS:
        raise ConfigError(f"unknown connector {spec.type!r}; known: {sorted(CONNECTORS)}")
    cls = CONNECTORS[spec.type]
    return cls.token_count(num_frames, **{**option_defaults(cls), **spec.options, "frame_rate": frame_rate})


def option_defaults(cls: type) -> dict:
    """The constructor's options and their defaults (the one place defaults are written)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[3:]  # past self, input_dim, output_dim
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def check_options(cls: type, options: dict) -> None:
    """Each option must suit its default: a positive int for an int (or None) default, a positive number
    for a float default, true/false for a bool one. Unknown names are left to the constructor's TypeError."""
    parameters = inspect.signature(cls.__init__).parameters
    for key, value in options.items():
        if key not in parameters:
            continue
        default = parameters[key].default
        if isinstance(default, bool):
            expected, ok = "true or false", isinstance(value, bool)
        elif isinstance(default, float):
            expected, ok = "a positive number", type(value) in (int, float) and value > 0
        elif isinstance(default, int) or default is None:
            expected = "a positive integer"
            ok = (value is None and default is None) or (type(value) is int and value > 0)
        else:
            continue
        if not ok:
            raise ConfigError(f"connector {cls.name!r}: option {key}={value!r} must be {expected}")


def mask_padding(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero every frame past its clip's length."""
    keep = torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None].to(features.device)
    return features * keep[..., None].to(features.dtype)


def window_count(num_frames: int, window: int, stride: int, partial_window: bool = True) -> int:
    """Windows of `window` frames every `stride` frames over `num_frames` frames (at least one: a short clip is
    zero-padded to one window); a last partial window counts unless `partial_window` is False (torch's pooling and
    unfold drop it)."""
    whole, rest = divmod(max(num_frames - window, 0), stride)
    return whole + 1 + (1 if rest and partial_window else 0)


def pad_frames(features: torch.Tensor, total: int) -> torch.Tensor:
    """Right-pad (or crop) the frame axis to `total` frames."""
    missing = total - features.shape[1]
    return F.pad(features, (0, 0, 0, missing)) if missing > 0 else features[:, :total]


class Connector(nn.Module):
    name: str

    @staticmethod
    def token_count(num_frames: int, **options) -> int:
        """Tokens for `num_frames` frames given the constructor's options (all of them, `frame_rate` included)."""
        raise NotImplementedError

    def output_length(self, num_frames: int) -> int:
        raise NotImplementedError

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.output_length(int(n)) for n in lengths], device=lengths.device)


@register_connector("linear")
class LinearConnector(Connector):
    """One linear map per frame."""

    def __init__(self, input_dim, output_dim, frame_rate=50.0):
        super().__init__()
        self.proj = nn.Linear(input_dim, output_dim)

    @staticmethod
    def token_count(num_frames, **options):
        return num_frames

    def output_length(self, num_frames):
        return num_frames

    def forward(self, features, lengths):
        return self.proj(mask_padding(features, lengths)), self.output_lengths(lengths)


@register_connector("identity")
class IdentityConnector(Connector):
    """Encoder frames as they are: for an LLM that already reads this encoder (Whisper's own decoder)."""

    def __init__(self, input_dim, output_dim, frame_rate=50.0):
        super().__init__()
        if input_dim != output_dim:
            raise ConfigError(f"identity connector: encoder width {input_dim} differs from LLM width {output_dim}")

    @staticmethod
    def token_count(num_frames, **options):
        return num_frames

    def output_length(self, num_frames):
        return num_frames

    def forward(self, features, lengths):
        return mask_padding(features, lengths), self.output_lengths(lengths)


@register_connector("mlp")
class MLPConnector(Connector):
    """Linear -> GELU -> Linear per frame."""

    def __init__(self, input_dim, output_dim, frame_rate=50.0, hidden_dim=None):
        super().__init__()
        hidden_dim = hidden_dim or output_dim
        self.net = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, output_dim))

    @staticmethod
    def token_count(num_frames, **options):
        return num_frames

    def output_length(self, num_frames):
        return num_frames

    def forward(self, features, lengths):
        return self.net(mask_padding(features, lengths)), self.output_lengths(lengths)


@register_connector("stack_mlp")
class StackingConnector(Connector):
    """Ultravox: stack `stack` consecutive frames, RMSNorm, Linear, SwiGLU, Linear, then a LayerNorm
    whose gain can be set to the LLM's token-embedding scale (connector outputs otherwise dwarf text
    embeddings; see REFERENCE.md section 4)."""

    def __init__(self, input_dim, output_dim, frame_rate=50.0, stack=8, hidden_dim=None, output_norm=True):
        super().__init__()
        self.stack = stack
        hidden_dim = hidden_dim or output_dim
        self.norm = nn.RMSNorm(input_dim * stack)
        self.up = nn.Linear(input_dim * stack, 2 * hidden_dim)
        self.down = nn.Linear(hidden_dim, output_dim)
        self.out_norm = nn.LayerNorm(output_dim) if output_norm else nn.Identity()

    @staticmethod
    def token_count(num_frames, *, stack, **options):
        return math.ceil(num_frames / stack)

    def output_length(self, num_frames):
        return self.token_count(num_frames, stack=self.stack)

    def forward(self, features, lengths):
        batch, frames, dim = features.shape
        tokens = math.ceil(frames / self.stack)
        stacked = pad_frames(mask_padding(features, lengths), tokens * self.stack)
        stacked = stacked.reshape(batch, tokens, dim * self.stack)
        gate, value = self.up(self.norm(stacked)).chunk(2, dim=-1)
        return self.out_norm(self.down(F.silu(gate) * value)), self.output_lengths(lengths)


@register_connector("ultravox")
class UltravoxConnector(Connector):
    """Ultravox's projector, exactly as vLLM serves it (vllm/model_executor/models/ultravox.py,
    UltravoxFeedForwardProjector): stack `stack` frames (zero-padded to a multiple), RMSNorm, Linear without bias
    to `hidden_dim`, SwiGLU as x[:h/2] * silu(x[h/2:]), RMSNorm in the middle (`ln_mid`, Ultravox >= 0.5) or at the
    output, Linear without bias. A model with this connector exports to vLLM (speechllm.export)."""

    def __init__(self, input_dim, output_dim, frame_rate=50.0, stack=8, hidden_dim=None, ln_mid=True):
        super().__init__()
        self.stack = stack
        hidden_dim = hidden_dim or 2 * output_dim  # Ultravox's `hidden_size`: the width before SwiGLU halves it
        if hidden_dim % 2:
            raise ConfigError(f"ultravox connector: hidden_dim {hidden_dim} must be even (SwiGLU halves it)")
        self.ln_pre = nn.RMSNorm(input_dim * stack, eps=1e-6)  # vLLM's RMSNorm default eps
        self.linear_1 = nn.Linear(input_dim * stack, hidden_dim, bias=False)
        self.ln_mid = nn.RMSNorm(hidden_dim // 2, eps=1e-6) if ln_mid else nn.Identity()
        self.linear_2 = nn.Linear(hidden_dim // 2, output_dim, bias=False)
        self.ln_post = nn.Identity() if ln_mid else nn.RMSNorm(output_dim, eps=1e-6)

    @staticmethod
    def token_count(num_frames, *, stack, **options):
        return math.ceil(num_frames / stack)

    def output_length(self, num_frames):
        return self.token_count(num_frames, stack=self.stack)

    def forward(self, features, lengths):
        batch, frames, dim = features.shape
        tokens = math.ceil(frames / self.stack)
        stacked = pad_frames(mask_padding(features, lengths), tokens * self.stack)
        hidden = self.linear_1(self.ln_pre(stacked.reshape(batch, tokens, dim * self.stack)))
        value, gate = hidden.chunk(2, dim=-1)
        return self.ln_post(self.linear_2(self.ln_mid(value * F.silu(gate)))), self.output_lengths(lengths)


@register_connector("pool_linear")
class PoolLinearConnector(Connector):
    """Kang & Roy: average pooling (kernel 8, stride 4) then a linear map. Clips shorter than one
    kernel are zero-padded to one kernel, so every clip gives at least one token. A last, partial window
    is zero-padded too; `partial_window: false` drops it, as torch's AvgPool1d (and their released code) does."""

    def __init__(self, input_dim, output_dim, frame_rate=50.0, kernel=8, stride=4, partial_window=True):
        super().__init__()
        if stride > kernel:
            raise ConfigError(f"pool_linear: stride {stride} > kernel {kernel} skips frames")
        self.kernel, self.stride, self.partial_window = kernel, stride, partial_window
        self.proj = nn.Linear(input_dim, output_dim)

    @staticmethod
    def token_count(num_frames, *, kernel, stride, partial_window=True, **options):
        return window_count(num_frames, kernel, stride, partial_window)

    def output_length(self, num_frames):
        return self.token_count(num_frames, kernel=self.kernel, stride=self.stride,
                                partial_window=self.partial_window)

    def forward(self, features, lengths):
        tokens = max(self.output_length(int(n)) for n in lengths)
        x = pad_frames(mask_padding(features, lengths), (tokens - 1) * self.stride + self.kernel)
        pooled = F.avg_pool1d(x.transpose(1, 2), self.kernel, self.stride).transpose(1, 2)
        return self.proj(pooled), self.output_lengths(lengths)


@register_connector("speechllm_cnn")
class SpeechLLMConvConnector(Connector):
    """skit-ai SpeechLLM: ReLU, Conv1d(k5), ReLU, Conv1d(k5, stride 2), ReLU, Conv1d(k3 or k5), no padding.
    Inputs shorter than the stack's receptive field are zero-padded to it."""

    def __init__(self, input_dim, output_dim, frame_rate=50.0, last_kernel=3):
        super().__init__()
        self.last_kernel = last_kernel
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(input_dim, output_dim // 2, 5),
            nn.ReLU(),
            nn.Conv1d(output_dim // 2, output_dim, 5, stride=2),
            nn.ReLU(),
            nn.Conv1d(output_dim, output_dim, last_kernel),
        )
        self.min_frames = self.receptive_field(last_kernel)

    @staticmethod
    def receptive_field(last_kernel: int) -> int:
        return 4 + 5 + 2 * (last_kernel - 1)  # the frames one output token sees

    @staticmethod
    def token_count(num_frames, *, last_kernel, **options):
        n = max(num_frames, SpeechLLMConvConnector.receptive_field(last_kernel)) - 4
        return (n - 5) // 2 + 1 - (last_kernel - 1)

    def output_length(self, num_frames):
        return self.token_count(num_frames, last_kernel=self.last_kernel)

    def forward(self, features, lengths):
        frames = max(max(int(n) for n in lengths), self.min_frames)
        x = pad_frames(mask_padding(features, lengths), frames)
        return self.net(x.transpose(1, 2)).transpose(1, 2), self.output_lengths(lengths)


@register_connector("window_qformer")
class WindowQFormerConnector(Connector):
    """SALMONN / Self-Powered LSM: N learned queries cross-attend to each window of frames; window and
    stride are in seconds (fixed, not derived from the batch), padding frames are masked out."""

    def __init__(
        self, input_dim, output_dim, frame_rate=50.0, window_seconds=0.33, stride_seconds=0.33,
        queries=1, hidden_dim=256, layers=2, heads=4,
    ):
        super().__init__()
        self.window = self.frames_of(window_seconds, frame_rate)
        self.stride = self.frames_of(stride_seconds, frame_rate)
        if self.stride > self.window:
            raise ConfigError(f"window_qformer: stride_seconds {stride_seconds} > window_seconds {window_seconds} "
                              "skips frames")
        if hidden_dim % heads:
            raise ConfigError(f"window_qformer: hidden_dim {hidden_dim} is not divisible by heads {heads}")
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_proj = nn.Linear(input_dim, hidden_dim)
        self.queries = nn.Parameter(torch.randn(queries, hidden_dim) * 0.02)
        layer = nn.TransformerDecoderLayer(hidden_dim, heads, 4 * hidden_dim, dropout=0.0, batch_first=True)
        self.qformer = nn.TransformerDecoder(layer, layers)
        self.proj = nn.Linear(hidden_dim, output_dim)

    @staticmethod
    def frames_of(seconds: float, frame_rate: float) -> int:
        return max(1, round(seconds * frame_rate))

    @staticmethod
    def windows(num_frames: int, window: int, stride: int) -> int:
        return math.ceil(max(num_frames - window, 0) / stride) + 1

    @staticmethod
    def token_count(num_frames, *, frame_rate, window_seconds, stride_seconds, queries, **options):
        frames_of = WindowQFormerConnector.frames_of
        windows = WindowQFormerConnector.windows(num_frames, frames_of(window_seconds, frame_rate),
                                                 frames_of(stride_seconds, frame_rate))
        return windows * queries

    def output_length(self, num_frames):
        return self.windows(num_frames, self.window, self.stride) * len(self.queries)

    def forward(self, features, lengths):
        batch = features.shape[0]
        windows = max(self.output_length(int(n)) for n in lengths) // len(self.queries)
        total = (windows - 1) * self.stride + self.window
        x = self.input_proj(self.input_norm(pad_frames(mask_padding(features, lengths), total)))
        # (batch, windows, window, hidden) and the matching "is padding" mask
        chunks = x.unfold(1, self.window, self.stride).permute(0, 1, 3, 2)
        positions = torch.arange(total, device=x.device).unfold(0, self.window, self.stride)
        padding = positions[None] >= lengths.to(x.device)[:, None, None]
        # A window made only of padding still needs one key to attend to; its output is cropped anyway.
        padding[..., 0] = False
        memory = chunks.reshape(batch * windows, self.window, -1)
        queries = self.queries[None].expand(batch * windows, -1, -1)
        out = self.qformer(queries, memory, memory_key_padding_mask=padding.reshape(batch * windows, -1))
        return self.proj(out.reshape(batch, windows * len(self.queries), -1)), self.output_lengths(lengths)


@register_connector("window_blip2_qformer")
class Blip2WindowQFormerConnector(Connector):
    """Self-Powered LSM (and SALMONN's layout): LayerNorm on the encoder frames, then whole windows of `window`
    frames every `stride` frames (as torch's unfold takes them; a clip shorter than one window is zero-padded to
    one), each read by BLIP-2's Q-Former (`queries` learned queries, BERT layers with cross-attention: transformers'
    Blip2QFormerModel), then a linear map to the LLM. Frames past a clip's length are masked out of cross-attention.
    A last partial window is read too (its padding masked); `partial_window: false` drops it, as their unfold does."""

    def __init__(self, input_dim, output_dim, frame_rate=50.0, window=17, stride=17, queries=1, hidden_dim=768,
                 layers=2, heads=12, intermediate_dim=3072, partial_window=True):
        from transformers import Blip2QFormerConfig, Blip2QFormerModel

        super().__init__()
        if stride > window:
            raise ConfigError(f"window_blip2_qformer: stride {stride} > window {window} skips frames")
        self.window, self.stride, self.partial_window = window, stride, partial_window
        self.input_norm = nn.LayerNorm(input_dim)
        self.queries = nn.Parameter(torch.randn(1, queries, hidden_dim) * 0.02)
        self.qformer = Blip2QFormerModel(Blip2QFormerConfig(
            hidden_size=hidden_dim, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=intermediate_dim, encoder_hidden_size=input_dim, cross_attention_frequency=1,
            layer_norm_eps=1e-12))  # BERT's epsilon, which BLIP-2's Q-Former keeps
        self.proj = nn.Linear(hidden_dim, output_dim)

    @staticmethod
    def token_count(num_frames, *, window, stride, queries, partial_window=True, **options):
        return window_count(num_frames, window, stride, partial_window) * queries

    def output_length(self, num_frames):
        return self.token_count(num_frames, window=self.window, stride=self.stride, queries=self.queries.shape[1],
                                partial_window=self.partial_window)

    def forward(self, features, lengths):
        batch, queries = features.shape[0], self.queries.shape[1]
        windows = max(self.output_length(int(n)) for n in lengths) // queries
        total = (windows - 1) * self.stride + self.window
        x = self.input_norm(pad_frames(mask_padding(features, lengths), total))
        chunks = x.unfold(1, self.window, self.stride).permute(0, 1, 3, 2).reshape(batch * windows, self.window, -1)
        positions = torch.arange(total, device=x.device).unfold(0, self.window, self.stride)
        keep = positions[None] < lengths.to(x.device)[:, None, None]
        keep[..., 0] = True  # a window of padding only still needs one key; its tokens are cropped anyway
        out = self.qformer(query_embeds=self.queries.expand(batch * windows, -1, -1), encoder_hidden_states=chunks,
                           encoder_attention_mask=keep.reshape(batch * windows, -1).long()).last_hidden_state
        return self.proj(out).reshape(batch, windows * queries, -1), self.output_lengths(lengths)
