"""Window-level Q-Former connectors (registered in speechllm.connectors' registry when the package is imported):
learned queries cross-attend to each fixed window of encoder frames, as SALMONN and Self-Powered LSM read audio.
`window_qformer` is our own layer stack; `window_blip2_qformer` is BLIP-2's Q-Former (transformers'
Blip2QFormerModel), the layout the Self-Powered seed's checkpoints use."""

from __future__ import annotations

import math

import torch
from torch import nn

from .connectors import Connector, mask_padding, pad_frames, register_connector, window_count
from .errors import ConfigError


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
