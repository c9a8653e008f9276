"""speechllm: build, train, evaluate and serve speech LLMs (audio encoder -> connector -> causal LLM)."""

from .errors import AudioError, ConfigError, DataError, InputError, SpeechLLMError

__version__ = "0.1.0"

# Importing the model registers model_type "speechllm" with transformers' Auto classes.
from . import asr_bridge  # noqa: E402, F401  (registers the whisper_transcriber encoder and token_bridge connector)
from .config import ModelSpec  # noqa: E402
from .models import SpeechLLMConfig, SpeechLLMForConditionalGeneration, default_model, load  # noqa: E402

SpeechLLM = SpeechLLMForConditionalGeneration

__all__ = ["default_model", "ModelSpec", "SpeechLLM", "SpeechLLMConfig", "SpeechLLMForConditionalGeneration", "load", "AudioError", "ConfigError", "DataError", "InputError", "SpeechLLMError", "__version__"]
