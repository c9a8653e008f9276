"""Audio encoders: one small wrapper per family, one registry, one interface.

Every encoder takes right-padded 16 kHz waveforms and their lengths and returns right-padded features
(batch, frames, dim) and the number of valid frames per clip. Clips longer than the encoder's window
are cut into windows whose features are joined, so nothing is silently truncated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torch import nn

from .audio import SAMPLE_RATE
from .config import EncoderSpec
from .errors import ConfigError
from .frame_counts import ConvFrameCount, FrameCount, FusedFrameCount, WhisperFrameCount
from .whisper_unpadded import bucketed_samples

ENCODERS: dict[str, type["AudioEncoder"]] = {}


def register_encoder(*names: str) -> Callable:
    def register(cls):
        for name in names:
            ENCODERS[name] = cls
        return cls

    return register


def build_encoder(spec: EncoderSpec) -> "AudioEncoder":
    """The encoder named by `spec.family`, with pretrained weights (`name_or_path`) or random ones (`hf_config`)."""
    if spec.family not in ENCODERS:
        raise ConfigError(f"unknown encoder family {spec.family!r}; known: {sorted(ENCODERS)}")
    if spec.name_or_path is None and spec.hf_config is None:
        raise ConfigError("encoder: give `name_or_path` (hub id or local directory) or `hf_config`")
    if spec.name_or_path is not None:
        from .pretrained import resolve_name_or_path

        spec = dataclasses.replace(spec, name_or_path=resolve_name_or_path(spec.name_or_path))
    return ENCODERS[spec.family](spec)


def load_checked(model_class, name_or_path: str):
    """`model_class.from_pretrained`, refusing checkpoints that leave weights randomly initialised."""
    from .model_files import reading_model

    with reading_model(name_or_path, "encoder"):
        model, info = model_class.from_pretrained(name_or_path, output_loading_info=True, trust_remote_code=False)
    # Masked-prediction heads etc. of pretraining checkpoints are expected extras; missing weights are not.
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ConfigError(f"{name_or_path}: checkpoint lacks {len(missing)} encoder weights, e.g. {missing[:3]}")
    return model


def layer_states(output, all_layers: bool) -> torch.Tensor:
    """A transformers model output -> its last hidden state (batch, frames, dim), or with `all_layers` every hidden
    state stacked (batch, frames, layers, dim). The last is the output itself: stable-layer-norm models (HuBERT
    large, WavLM) apply their final norm after collecting the hidden states."""
    if not all_layers:
        return output.last_hidden_state
    return torch.stack([*output.hidden_states[:-1], output.last_hidden_state], dim=2)


def encoder_frame_count(spec: EncoderSpec, fusion: EncoderSpec | None = None) -> FrameCount | FusedFrameCount:
    """The frame count of the encoder `spec` describes (fused with `fusion` if given), without building it.
    Reads the model config from `spec.hf_config`, or from `name_or_path` (the config file only, no weights)."""
    if spec.family not in ENCODERS:
        raise ConfigError(f"unknown encoder family {spec.family!r}; known: {sorted(ENCODERS)}")
    count = ENCODERS[spec.family].frame_count(spec, _model_config(spec))
    return count if fusion is None else FusedFrameCount(count, encoder_frame_count(fusion))


def _model_config(spec: EncoderSpec):
    from transformers import AutoConfig

    if spec.hf_config is not None:
        return AutoConfig.for_model(**{"model_type": spec.family, **spec.hf_config})
    if spec.name_or_path is None:
        raise ConfigError("encoder: give `name_or_path` (hub id or local directory) or `hf_config`")
    from .model_files import reading_model
    from .pretrained import resolve_name_or_path

    name = resolve_name_or_path(spec.name_or_path)
    with reading_model(name, "encoder"):
        return AutoConfig.from_pretrained(name, trust_remote_code=False)


class AudioEncoder(nn.Module):
    """Base class: windowing of long audio and the (features, lengths) contract.

    Subclasses set `self.model` and `output_dim`, then `self.frames = self.frame_count(spec, config)`;
    they implement `frame_count` (a classmethod: lengths from the spec alone) and `encode_windows`.
    """

    default_window_seconds = 30.0

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec

    # -- what subclasses provide -------------------------------------------------------------
    output_dim: int
    frames: FrameCount

    @classmethod
    def frame_count(cls, spec: EncoderSpec, config) -> FrameCount:
        """How this family counts frames, from its spec and model config (a transformers config)."""
        raise NotImplementedError

    @classmethod
    def window_samples_of(cls, spec: EncoderSpec) -> int:
        return int(round((spec.window_seconds or cls.default_window_seconds) * SAMPLE_RATE))

    def encode_windows(self, windows: torch.Tensor, lengths: torch.Tensor, all_layers: bool = False) -> torch.Tensor:
        """(n, samples) padded windows -> (n, frames, dim) features; frames past a window's length are ignored.
        With `all_layers`, every hidden state the model outputs: (n, frames, layers, dim), the last layer last."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.frames.frame_rate

    @property
    def window_samples(self) -> int:
        return self.frames.window_samples

    @property
    def min_samples(self) -> int:
        """The shortest clip that yields at least one frame."""
        return self.frames.min_samples

    def window_output_length(self, num_samples: int) -> int:
        return self.frames.window_frames(num_samples)

    def hf_config(self) -> dict:
        """The underlying model's config, so a checkpoint can rebuild this encoder without the hub."""
        return self.model.config.to_dict()

    def output_length(self, num_samples: int) -> int:
        """Number of feature frames for a clip of `num_samples` samples (all windows joined)."""
        return self.frames.output_length(num_samples)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor,
                all_layers: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, lengths); with `all_layers`, features hold every layer: (batch, frames, layers, dim)."""
        windows, window_lengths, owners = [], [], []
        for clip, (wave, length) in enumerate(zip(waveforms, lengths.tolist())):
            start = 0
            for size in self.frames.window_sizes(length):
                piece = wave[start : start + min(size, max(length - start, 0))]
                windows.append(piece)
                window_lengths.append(size)
                owners.append(clip)
                start += size
        batch = waveforms.new_zeros(len(windows), max(window_lengths))
        for row, piece in enumerate(windows):
            batch[row, : len(piece)] = piece
        window_lengths_t = torch.tensor(window_lengths)
        frames = self.encode_windows(batch, window_lengths_t, all_layers)
        out_lengths = [self.window_output_length(n) for n in window_lengths]
        per_clip: list[list[torch.Tensor]] = [[] for _ in range(len(waveforms))]
        for row, (owner, n) in enumerate(zip(owners, out_lengths)):
            per_clip[owner].append(frames[row, :n])
        joined = [torch.cat(parts) for parts in per_clip]
        feature_lengths = torch.tensor([len(j) for j in joined], device=waveforms.device)
        features = frames.new_zeros(len(joined), int(feature_lengths.max()), *frames.shape[2:])
        for row, j in enumerate(joined):
            features[row, : len(j)] = j
        return features, feature_lengths


@register_encoder("whisper")
class WhisperAudioEncoder(AudioEncoder):
    """Whisper's encoder on log-mel input. It always sees 30 s (3000 mel frames); outputs are cropped
    to the clip's real length (one frame per 320 samples, 50 Hz)."""

    default_window_seconds = 30.0

    def __init__(self, spec: EncoderSpec):
        from transformers import AutoConfig, WhisperConfig, WhisperFeatureExtractor, WhisperModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        if (spec.window_seconds or 30.0) > 30.0:
            raise ConfigError("whisper encoder: window_seconds cannot exceed 30 (Whisper's fixed input)")
        super().__init__(spec)
        if spec.name_or_path is not None:
            from .model_files import reading_model

            with reading_model(spec.name_or_path, "encoder"):
                config = AutoConfig.from_pretrained(spec.name_or_path, trust_remote_code=False)
            # A saved encoder alone loads as itself; a whole Whisper (hub ids) gives up its encoder.
            if "WhisperEncoder" in (config.architectures or []):
                self.model = load_checked(WhisperEncoder, spec.name_or_path)
            else:
                self.model = load_checked(WhisperModel, spec.name_or_path).get_encoder()
        else:
            self.model = WhisperEncoder(WhisperConfig(**spec.hf_config))
        config = self.model.config
        self.feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        self.output_dim = config.d_model
        self.frames = self.frame_count(spec, config)
        self.pad_to_window = self.whisper_options(spec)["pad_to_window"]

    @staticmethod
    def whisper_options(spec) -> dict:
        """`pad_to_window` (default true: 30 s windows, as Whisper was trained) and `bucket_seconds`: see
        whisper_unpadded.py."""
        from .whisper_unpadded import check_whisper_options

        return check_whisper_options(spec.options, spec.crop_to_length)

    @classmethod
    def frame_count(cls, spec, config) -> WhisperFrameCount:
        bucket = cls.whisper_options(spec)["bucket_seconds"] or 0
        return WhisperFrameCount(cls.window_samples_of(spec), SAMPLE_RATE / 320,
                                 max_frames=config.max_source_positions, crop_to_length=spec.crop_to_length,
                                 bucket_samples=int(round(bucket * SAMPLE_RATE)))

    def encode_windows(self, windows, lengths, all_layers=False):
        if not self.pad_to_window:
            from .whisper_unpadded import clip_mel, encode_unpadded

            size = [bucketed_samples(int(n), self.frames.bucket_samples, self.window_samples) for n in lengths]
            mels = [clip_mel(self.feature_extractor, w[:n].float().cpu().numpy(), size=s)
                    for w, n, s in zip(windows, lengths.tolist(), size)]
            return layer_states(encode_unpadded(self.model, mels, all_layers), all_layers)
        # The log-mel is computed in fp32 whatever autocast is active (it goes through numpy).
        with torch.autocast(device_type="cpu", enabled=False):
            mel = self.feature_extractor(
                [w.float().cpu().numpy() for w in windows], sampling_rate=SAMPLE_RATE, return_tensors="pt"
            ).input_features
        param = next(self.model.parameters())
        return layer_states(self.model(mel.to(param.device, param.dtype), output_hidden_states=all_layers),
                            all_layers)


@register_encoder("hubert", "wavlm", "wav2vec2")
class SelfSupervisedAudioEncoder(AudioEncoder):
    """HuBERT, WavLM and wav2vec2: raw waveform in, about 50 frames a second out.

    Models with layer-norm feature extractors take an attention mask; group-norm ones (the base
    models) see padding as signal, so their windows are encoded one at a time to keep outputs
    independent of the batch.
    """

    def __init__(self, spec: EncoderSpec):
        from transformers import AutoConfig, AutoModel

        super().__init__(spec)
        if spec.name_or_path is not None:
            self.model = load_checked(AutoModel, spec.name_or_path)
        else:
            config = AutoConfig.for_model(**spec.hf_config)
            self.model = AutoModel.from_config(config)
        config = self.model.config
        self.output_dim = config.hidden_size
        self.frames = self.frame_count(spec, config)
        self.masks_padding = config.feat_extract_norm == "layer"
        self.normalize = spec.normalize if spec.normalize is not None else self.masks_padding

    @classmethod
    def frame_count(cls, spec, config) -> ConvFrameCount:
        kernels, strides = list(config.conv_kernel), list(config.conv_stride)
        if getattr(config, "add_adapter", False):  # wav2vec2's adapter: more strided convolutions, kernel 1
            kernels += [1] * config.num_adapter_layers
            strides += [config.adapter_stride] * config.num_adapter_layers
        return ConvFrameCount(cls.window_samples_of(spec), SAMPLE_RATE / math.prod(config.conv_stride),
                              kernels=tuple(kernels), strides=tuple(strides))

    def encode_windows(self, windows, lengths, all_layers=False):
        param = next(self.model.parameters())
        windows = windows.to(param.device, torch.float32)
        mask = torch.arange(windows.shape[1], device=windows.device)[None, :] < lengths.to(windows.device)[:, None]
        if self.normalize:
            count = mask.sum(1, keepdim=True)
            mean = (windows * mask).sum(1, keepdim=True) / count
            var = (((windows - mean) * mask) ** 2).sum(1, keepdim=True) / count
            windows = (windows - mean) / torch.sqrt(var + 1e-7) * mask
        windows = windows.to(param.dtype)
        if self.masks_padding:
            out = self.model(windows, attention_mask=mask.long(), output_hidden_states=all_layers)
            return layer_states(out, all_layers)
        outputs = [layer_states(self.model(w[None, :n], output_hidden_states=all_layers), all_layers)[0]
                   for w, n in zip(windows, lengths.tolist())]
        frames = outputs[0].new_zeros(len(outputs), max(len(o) for o in outputs), *outputs[0].shape[1:])
        for row, out in enumerate(outputs):
            frames[row, : len(out)] = out
        return frames


class FusedEncoder(nn.Module):
    """Two encoders side by side (SALMONN, WavLLM): each frame of the first gets the second's frame nearest
    to it in time, and the features are concatenated along the channel axis."""

    def __init__(self, primary: AudioEncoder, secondary: AudioEncoder):
        super().__init__()
        self.primary, self.secondary = primary, secondary
        self.output_dim = primary.output_dim + secondary.output_dim
        self.frames = FusedFrameCount(primary.frames, secondary.frames)
        self.frame_rate = primary.frame_rate

    @property
    def min_samples(self) -> int:
        return self.frames.min_samples

    def output_length(self, num_samples: int) -> int:
        return self.frames.output_length(num_samples)

    def forward(self, waveforms, lengths, all_layers: bool = False):
        if all_layers:  # the two encoders' layers differ in number and width
            raise ConfigError("a fused encoder has no single stack of layers; use the 'encoder' head feature")
        first, first_lengths = self.primary(waveforms, lengths)
        second, second_lengths = self.secondary(waveforms, lengths)
        aligned = second.new_zeros(*first.shape[:2], second.shape[-1])
        # By time, not by count: the two rarely give the same number of frames (Whisper 50 for 1 s, HuBERT 49).
        scale = self.secondary.frame_rate / self.primary.frame_rate
        for row, (n1, n2) in enumerate(zip(first_lengths.tolist(), second_lengths.tolist())):
            index = (torch.arange(n1, device=second.device) * scale).round().long().clamp(max=n2 - 1)
            aligned[row, :n1] = second[row, index]
        return torch.cat([first, aligned], dim=-1), first_lengths
