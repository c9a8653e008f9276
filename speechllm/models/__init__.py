"""The speech LLM, laid out as transformers lays out a model.

configuration.py  SpeechLLMConfig (the ModelSpec a checkpoint holds)
processing.py     SpeechLLMProcessor: chat template, placeholders, labels; standalone, savable, AutoProcessor
coupling.py       prefix and cross-attention coupling: token counts, input merge, padding mask, generation
modeling.py       SpeechLLMForConditionalGeneration: parts, embed, forward, generate (AutoModel)
loading.py        checkpoints (full and trainable-only), `load`, `default_model`
precision.py      which dtype each part computes in (`pick_device`, per-part choice)
packaged.py       the models shipped inside the package, by name ("default", "gemma-bridge")
adapters.py       train modes, LoRA merge and scaling
"""

from .configuration import SpeechLLMConfig
from .coupling import audio_token_count, build_coupling
from .loading import default_model, load
from .modeling import SpeechLLMForConditionalGeneration, logits_at
from .packaged import PACKAGED_MODELS, packaged_model_names, packaged_model_path
from .precision import pick_device
from .processing import FALLBACK_CHAT_TEMPLATE, IGNORE_INDEX, SpeechLLMProcessor

__all__ = ["FALLBACK_CHAT_TEMPLATE", "IGNORE_INDEX", "PACKAGED_MODELS", "SpeechLLMConfig",
           "SpeechLLMForConditionalGeneration", "SpeechLLMProcessor", "audio_token_count", "build_coupling",
           "default_model", "load", "logits_at", "packaged_model_names", "packaged_model_path", "pick_device"]
