"""How a model is asked: instruction pools, the metadata instruction, the user turn, and the field names that
code refers to. Training tasks, inference and serving all build prompts here, so a model is asked exactly as it
was taught (same text, same audio position).

Instruction pools live in `speechllm/resources/instructions/<task>.txt` (one paraphrase per line, `#` starts a
comment); the first line of a pool is the plain instruction inference sends.
"""

from __future__ import annotations

import functools
from importlib import resources

from .audio import AudioInput
from .errors import ConfigError
from .metadata import SPEECH_FIELD, SPEECHLLM_SCHEMA, MetadataSchema  # noqa: F401 (SPEECH_FIELD: the rule's field)

# Schema fields that code treats specially: the `transcript` manifest key fills TRANSCRIPT_FIELD, WER reads it,
# and a speech-activity head sure there is no speech empties it.
TRANSCRIPT_FIELD = "Transcript"

METADATA_INSTRUCTION = "Give me the following information about the audio"
AUDIO_POSITION = "after_instruction"  # the user turn is [instruction text + "\n", audio, audio, ...]


def prompt_message(instruction: str, audio: AudioInput | list[AudioInput]) -> dict:
    """The user turn asking `instruction` about one clip or several, laid out as AUDIO_POSITION says."""
    clips = audio if isinstance(audio, list) else [audio]
    return {"role": "user", "content": [{"type": "text", "text": instruction + "\n"},
                                        *({"type": "audio", "audio": clip} for clip in clips)]}


@functools.cache
def instructions(task: str) -> tuple[str, ...]:
    """The paraphrase pool of `task`, from speechllm/resources/instructions/<task>.txt; ConfigError when none."""
    file = resources.files("speechllm").joinpath("resources", "instructions", f"{task}.txt")
    if not file.is_file():
        raise ConfigError(f"no instruction pool for task {task!r} (speechllm/resources/instructions/{task}.txt)")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    return tuple(line for line in lines if line and not line.startswith("#"))


def instruction_for(names=None, schema: MetadataSchema = SPEECHLLM_SCHEMA) -> str:
    """The instruction asking for `names` (all fields when None), e.g.
    "Give me the following information about the audio [SpeechActivity, Transcript, Gender]".
    Training and inference both call this, so the prompt is the same bytes in both."""
    return f"{METADATA_INSTRUCTION} [{', '.join(schema.subset(names).names)}]"
