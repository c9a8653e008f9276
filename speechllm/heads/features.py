"""Which clip features the heads can read: one registry, and the checks of the names a user writes.

Each feature maps 16 kHz clips (with the encoder's frames, and the pretrained models it may need) to a (clips, k)
array: `pitch` and `formants` (acoustic.py), `vad` and `voice` (extractors.py), `encoder` and `encoder_layers`
(encoder.py). Adding a feature is one function and one line in `FEATURES`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from .acoustic import formant_features, pitch_features
from .encoder import EncoderFrames, encoder_features, encoder_layer_features
from .extractors import PretrainedExtractors, vad_features, voice_features

# name -> f(clips, encoder frames or None, the pretrained models' owner) -> (clips, k) float32
FeatureFunction = Callable[[Sequence[np.ndarray], EncoderFrames | None, PretrainedExtractors], np.ndarray]

FEATURES: dict[str, FeatureFunction] = {
    "pitch": lambda clips, encoder_frames, extractors: pitch_features(clips),
    "formants": lambda clips, encoder_frames, extractors: formant_features(clips),
    "vad": lambda clips, encoder_frames, extractors: vad_features(clips, extractors),
    "voice": lambda clips, encoder_frames, extractors: voice_features(clips, extractors),
    "encoder": lambda clips, encoder_frames, extractors: encoder_features(encoder_frames),
    "encoder_layers": lambda clips, encoder_frames, extractors: encoder_layer_features(encoder_frames),
}


def clip_features(names: Sequence[str], clips: Sequence[np.ndarray], encoder_frames: EncoderFrames | None = None,
                  extractors: PretrainedExtractors | None = None) -> dict[str, np.ndarray]:
    """{name: (clips, k) array} for the features `names`. The `vad` and `voice` models come from `extractors`;
    without one they load for this call alone. ConfigError for an unknown name."""
    unknown = sorted(set(names) - set(FEATURES))
    if unknown:
        raise ConfigError(f"unknown head features {unknown}; known: {sorted(FEATURES)}")
    if extractors is None:
        extractors = PretrainedExtractors()
    return {name: FEATURES[name](clips, encoder_frames, extractors) for name in names}


def check_head_features(name, features, where: str) -> None:
    """ConfigError naming `where` unless `features` is a non-empty list of known feature names for field `name`."""
    if not (isinstance(name, str) and name and isinstance(features, list) and features
            and set(features) <= set(FEATURES)):
        raise ConfigError(f"{where}: give a field and a list of features from {sorted(FEATURES)}, "
                          f"got {name!r}: {features!r}")


def parse_head_features(items: Sequence[str]) -> dict[str, list[str]]:
    """["Gender=pitch,formants", ...] -> {"Gender": ["pitch", "formants"]}, checking the feature names."""
    out = {}
    for item in items:
        name, _, features = item.partition("=")
        out[name.strip()] = [f.strip() for f in features.split(",") if f.strip()]
        check_head_features(name.strip(), out[name.strip()], f"head {item!r} (write FIELD=FEATURE,...)")
    return out
