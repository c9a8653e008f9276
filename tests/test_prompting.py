"""Prompts: the instruction pools, the metadata instruction and the user turn that training, inference and
serving all build with `speechllm.prompting`."""

import pytest

from speechllm.errors import ConfigError
from speechllm.metadata import SPEECHLLM_SCHEMA
from speechllm.prompting import (
    SPEECH_FIELD,
    TRANSCRIPT_FIELD,
    instruction_for,
    instructions,
    prompt_message,
)


def test_prompt_layout_puts_audio_after_the_instruction():
    message = prompt_message("Transcribe the audio.", "a.wav")
    assert [p["type"] for p in message["content"]] == ["text", "audio"]


def test_instruction_pools_come_from_resource_files():
    for task in ("asr", "summarization", "continuation", "spoken_qa"):
        pool = instructions(task)
        assert len(pool) >= 8 and len(set(pool)) == len(pool)
    assert len(instructions("asr")) >= 20


def test_instruction_names_the_fields_in_order():
    assert instruction_for(["SpeechActivity", "Transcript", "Gender"]) == (
        "Give me the following information about the audio [SpeechActivity, Transcript, Gender]")
    assert instruction_for().endswith("[SpeechActivity, Transcript, Gender, Age, Accent, Emotion]")
    with pytest.raises(ConfigError, match="Gender"):
        instruction_for(["Gendre"])


def test_the_field_names_code_relies_on_are_fields_of_the_schema():
    assert {SPEECH_FIELD, TRANSCRIPT_FIELD} <= set(SPEECHLLM_SCHEMA.names)
    assert SPEECHLLM_SCHEMA.field(TRANSCRIPT_FIELD).kind == "text"
    assert SPEECHLLM_SCHEMA.field(SPEECH_FIELD).kind == "bool"


def test_an_unknown_pool_names_the_file_to_add():
    with pytest.raises(ConfigError, match="resources/instructions/translation.txt"):
        instructions("translation")
