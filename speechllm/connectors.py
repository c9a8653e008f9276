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


class FrameStacking(Connector):
    """Base of the connectors that stack `stack` consecutive frames (zero-padded to a multiple) into one token."""

    stack: int

    @staticmethod
    def token_count(num_frames, *, stack, **options):
        return math.ceil(num_frames / stack)

    def output_length(self, num_frames):
        return self.token_count(num_frames, stack=self.stack)

    def stacked(self, features, lengths):
        """(batch, tokens, dim * stack): each token the concatenation of its frames, padding zeroed."""
        batch, frames, dim = features.shape
        tokens = math.ceil(frames / self.stack)
        return pad_frames(mask_padding(features, lengths), tokens * self.stack).reshape(batch, tokens, dim * self.stack)


@register_connector("stack_mlp")
class StackingConnector(FrameStacking):
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

    def forward(self, features, lengths):
        gate, value = self.up(self.norm(self.stacked(features, lengths))).chunk(2, dim=-1)
        return self.out_norm(self.down(F.silu(gate) * value)), self.output_lengths(lengths)


@register_connector("ultravox")
class UltravoxConnector(FrameStacking):
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

    def forward(self, features, lengths):
        hidden = self.linear_1(self.ln_pre(self.stacked(features, lengths)))
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
