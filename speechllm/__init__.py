"""speechllm: build, train, evaluate and serve speech LLMs (audio encoder -> connector -> causal LLM)."""

from .errors import AudioError, ConfigError, DataError, InputError, SpeechLLMError

__version__ = "0.1.0"

__all__ = ["AudioError", "ConfigError", "DataError", "InputError", "SpeechLLMError", "__version__"]
