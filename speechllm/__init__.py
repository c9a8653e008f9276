"""speechllm: build, train, evaluate and serve speech LLMs (audio encoder -> connector -> causal LLM)."""

from .errors import AudioError, ConfigError, DataError, InputError, SpeechLLMError

__version__ = "0.1.0"

# Importing asr_bridge registers the whisper_transcriber encoder and token_bridge connector, qformer the window
# Q-Former connectors; importing the model
# registers model_type "speechllm" with transformers' Auto classes.
from . import asr_bridge, qformer  # noqa: E402, F401
from .config import ModelSpec  # noqa: E402
from .models import SpeechLLMConfig, SpeechLLMForConditionalGeneration, default_model, load  # noqa: E402

SpeechLLM = SpeechLLMForConditionalGeneration

__all__ = [
    "default_model", "ModelSpec", "SpeechLLM", "SpeechLLMConfig", "SpeechLLMForConditionalGeneration", "load",
    "AudioError", "ConfigError", "DataError", "InputError", "SpeechLLMError", "__version__",
]
