"""The one family of exceptions a user of speechllm can hit.

Every message says what was wrong and, where it can, how to fix it.
"""


class SpeechLLMError(Exception):
    """Base class of every error speechllm raises on purpose."""


class AudioError(SpeechLLMError, ValueError):
    """Audio that cannot be used: unreadable, empty, silent-by-NaN, too short or too long."""


class ConfigError(SpeechLLMError, ValueError):
    """A configuration that is malformed or names something that does not exist."""


class InputError(SpeechLLMError, ValueError):
    """A request or message that the processor or model cannot handle (wrong type, mismatched counts)."""


class DataError(SpeechLLMError, ValueError):
    """A bad row in a manifest or dataset."""


class MissingExtraError(ConfigError, ImportError):
    """A feature whose optional packages are not installed; the message names the pip extra that brings them.

    An ImportError too, so `except ImportError` and `pytest.importorskip` keep treating it as a missing module."""
