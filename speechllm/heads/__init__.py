"""Attribute heads: small classifiers that decide label and bool fields of the metadata answer.

Why: speaker attributes learned by the LLM from a few thousand synthetic clips do not carry over to real speech
(the default model guessed gender at chance on real recordings). A field's head reads a few clip-level features
chosen for that field, features that mean the same thing on real and synthetic audio: a speaker embedding trained on
real voices for gender, a pretrained voice-activity detector for speech activity, the encoder's layers, pooled, for
accent. The head picks the value; `MetadataConstraint` then makes the LLM write exactly that value in its JSON, so the
rest of the answer (the transcript above all) is conditioned on it, and the value's confidence is the head's
probability. When a head rules a clip has no speech, the transcript is left empty (inference.metadata_batch).

A head is a logistic regression on standardised features, fitted with L-BFGS; its weights are a few thousand
numbers, saved beside the model as heads.safetensors + heads.json.

    acoustic.py    pitch (F0 tracker) and formants (LPC): features of the waveform alone
    extractors.py  voice (resemblyzer's speaker encoder) and vad (Silero VAD): pretrained models, and their owner
    encoder.py     encoder and encoder_layers: the model's encoder frames pooled per clip; the encoder pass
    features.py    the feature registry (`FEATURES`) and the checks of feature names a user writes
    model.py       `AttributeHeads`: one linear head per field, predict, save and load
    calibration.py Platt scaling of a head's confidence, fitted on held-out clips
    fitting.py     fitting heads on feature arrays, or on a model's labelled manifests
"""

from .acoustic import f0_track, formant_features, formant_track, pitch_features
from .calibration import apply_calibration, fit_platt
from .encoder import ENCODER_FEATURES, LAYER_FEATURES, encode_for_heads, encoder_features, encoder_layer_features
from .extractors import PretrainedExtractors, VoiceEncoder, vad_features, voice_features
from .features import FEATURES, check_head_features, clip_features, parse_head_features
from .fitting import calibrate_heads, fit_head, fit_heads, fit_model_heads, labelled_clips, model_clip_features
from .model import HEADS_CONFIG, HEADS_WEIGHTS, AttributeHeads, HeadPrediction, LinearHead, field_values

__all__ = [
    "AttributeHeads", "ENCODER_FEATURES", "FEATURES", "HEADS_CONFIG", "HEADS_WEIGHTS", "HeadPrediction",
    "apply_calibration", "calibrate_heads", "fit_platt",
    "LAYER_FEATURES", "LinearHead", "PretrainedExtractors", "VoiceEncoder", "check_head_features", "clip_features",
    "encode_for_heads", "encoder_features", "encoder_layer_features", "f0_track", "field_values", "fit_head",
    "fit_heads", "fit_model_heads", "formant_features", "formant_track", "labelled_clips", "model_clip_features",
    "parse_head_features", "pitch_features", "vad_features", "voice_features",
]
