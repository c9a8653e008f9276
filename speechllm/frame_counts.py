"""How many frames an encoder gives for a clip, from its spec alone (no weights): the processor sizes prompts with
these before any audio is encoded. One small frozen dataclass per kind of encoder; `encoders.encoder_frame_count`
picks the one an encoder family uses."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .audio import SAMPLE_RATE
from .whisper_unpadded import bucketed_samples


@dataclass(frozen=True)
class FrameCount:
    """How many feature frames an encoder gives for a clip, from its spec alone (no weights): clips are cut
    into windows of `window_samples`, each counted by `window_frames`, and the windows' frames are joined.
    The processor counts audio tokens with it; the built encoder uses the same object, so they agree."""

    window_samples: int
    frame_rate: float
    # A budget (an encoder that transcribes gives as many tokens as it heard, at most this many) rather than an exact
    # count: the model then masks the positions a clip leaves unused.
    is_budget = False

    def window_frames(self, num_samples: int) -> int:
        raise NotImplementedError

    @functools.cached_property
    def min_samples(self) -> int:
        """The shortest clip that yields at least one frame."""
        return next(n for n in range(1, SAMPLE_RATE) if self.window_frames(n) >= 1)

    def window_sizes(self, num_samples: int) -> list[int]:
        sizes = [self.window_samples] * (num_samples // self.window_samples)
        if num_samples % self.window_samples:
            sizes.append(num_samples % self.window_samples)
        # A tail window too short for one frame is zero-padded up to the minimum, here and in forward.
        return [max(size, self.min_samples) for size in sizes] or [self.min_samples]

    def output_length(self, num_samples: int) -> int:
        """Number of feature frames for a clip of `num_samples` samples (all windows joined)."""
        return sum(self.window_frames(size) for size in self.window_sizes(int(num_samples)))


@dataclass(frozen=True)
class WhisperFrameCount(FrameCount):
    """One frame per 320 samples, at most `max_frames` a window; all of them without `crop_to_length`."""

    max_frames: int = 1500
    crop_to_length: bool = True
    bucket_samples: int = 0  # pad_to_window false with bucket_seconds: each window is its clip rounded up to a bucket

    def window_frames(self, num_samples: int) -> int:
        if not self.crop_to_length:
            return self.max_frames
        if self.bucket_samples:
            num_samples = bucketed_samples(num_samples, self.bucket_samples, self.window_samples)
        return min(math.ceil(num_samples / 320), self.max_frames)


@dataclass(frozen=True)
class ConvFrameCount(FrameCount):
    """A stack of unpadded 1-D convolutions (wav2vec2's feature extractor, then its adapter if any)."""

    kernels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()

    def window_frames(self, num_samples: int) -> int:
        for kernel, stride in zip(self.kernels, self.strides):
            num_samples = (num_samples - kernel) // stride + 1  # floor, as transformers computes it
        return num_samples


@dataclass(frozen=True)
class FusedFrameCount:
    """Two encoders side by side: the first one's frames, for clips long enough for both."""

    primary: FrameCount
    secondary: FrameCount

    @property
    def frame_rate(self) -> float:
        return self.primary.frame_rate

    @property
    def min_samples(self) -> int:
        return max(self.primary.min_samples, self.secondary.min_samples)

    def output_length(self, num_samples: int) -> int:
        return self.primary.output_length(num_samples)
