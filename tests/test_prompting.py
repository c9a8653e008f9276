"""Prompts: the instruction pools, the metadata instruction and the user turn that training, inference and
serving all build with `speechllm.prompting`."""

from pathlib import Path

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


def _passage_record(task, **keys):
    from speechllm.data.manifest import Record

    return Record(audio="/clips/a.wav", id="a", origin="m.jsonl:1", transcript="Hi, this is Ana from Leeds.",
                  task=task, **keys)


@pytest.mark.parametrize("task, request_kind, keys", [
    ("spoken_qa", "question", {"instruction": "Who is calling?", "response": "Ana"}),
    ("summarization", "summary", {"response": "Ana called from Leeds."}),
    ("asr", "transcript", {}),
])
def test_a_model_with_a_prompt_style_is_taught_with_the_requests_evaluation_sends(task, request_kind, keys):
    """Training words a base LLM's examples as the modality-gap evaluation and the quick start ask it (few-shot
    completions), not as bare instructions; without a style the plain instruction layout stays."""
    import random

    from speechllm.data.tasks import build_example
    from speechllm.prompt_styles import PROMPT_STYLES

    style, record = PROMPT_STYLES["few-shot"], _passage_record(task, **keys)
    example = build_example(record, None, random.Random(0), style=style)
    content = example.conversation[0]["content"]
    assert content == style.parts(request_kind, Path("/clips/a.wav"), question=keys.get("instruction"))
    assert [p["type"] for p in content] == ["text", "audio", "text"]  # the clip, not its path as text
    assert str(content[1]["audio"]) == "/clips/a.wav"
    assert example.conversation[-1] == {"role": "assistant", "content": keys.get("response", record.transcript)}
    assert example.transcripts == [record.transcript]  # distillation's teacher reads the same request as text
    plain = build_example(record, None, random.Random(0))
    assert plain.conversation[0]["content"][0]["text"].endswith("\n")
    assert "Passage:" not in plain.conversation[0]["content"][0]["text"]


def test_a_style_leaves_tasks_it_has_no_wording_for_alone():
    import random

    from speechllm.data.tasks import build_example
    from speechllm.prompt_styles import PROMPT_STYLES

    record = _passage_record("continuation", response="and then she left.")
    styled = build_example(record, None, random.Random(0), style=PROMPT_STYLES["few-shot"])
    assert styled.conversation == build_example(record, None, random.Random(0)).conversation


def test_the_prompt_style_comes_from_the_model_spec():
    from types import SimpleNamespace

    from speechllm.config import ModelSpec
    from speechllm.prompt_styles import resolve_prompt_style

    model = SimpleNamespace(config=SimpleNamespace(model_spec=ModelSpec(prompt_style="few-shot")))
    assert resolve_prompt_style(None, model).name == "few-shot"
    assert resolve_prompt_style("plain", model).name == "plain"
    assert resolve_prompt_style(None, SimpleNamespace(config=SimpleNamespace(model_spec=ModelSpec()))).name == "plain"
