"""Synthetic speech corpora whose labels are true by construction.

`build_corpus` writes wavs and train/dev/test manifests from offline voices (espeak-ng, piper-tts),
offline sentences (quotes and a template grammar) and generated non-speech clips, with augmentation.
`build_passages` (module `passages`) writes spoken passages with questions and summaries for spoken QA.
"""

from speechllm.data.synth.augment import AugmentConfig, augment
from speechllm.data.synth.corpus import build_corpus
from speechllm.data.synth.negatives import NEGATIVES, make_negative
from speechllm.data.synth.sentences import SentencePool, split_of
from speechllm.data.synth.voices import (
    ACCENTS,
    BACKENDS,
    GENDERS,
    Backend,
    Voice,
    list_voices,
    register_backend,
    resolve_voices,
    synthesize,
)

__all__ = [
    "ACCENTS", "AugmentConfig", "BACKENDS", "Backend", "GENDERS", "NEGATIVES", "SentencePool", "Voice", "augment",
    "build_corpus", "list_voices", "make_negative", "register_backend", "resolve_voices", "split_of",
    "synthesize",
]
