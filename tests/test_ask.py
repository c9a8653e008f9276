"""Asking a model a question, for a summary or for a transcript through the library (`model.ask`, `model.summarize`,
`model.transcribe`) and `speechllm infer --instruction`: a model trained in a prompt style (gemma-bridge: few-shot
completions for a base LLM) is asked in that style, a model without one by a plain instruction."""

import numpy as np
import pytest

from speechllm.inference import infer_clips
from speechllm.prompt_styles import PROMPT_STYLES
from speechllm.prompting import instructions, prompt_message
from speechllm.testing import tiny_model

RATE = 16000


@pytest.fixture(scope="module")
def models():
    plain = tiny_model("whisper", "stack_mlp")
    styled = tiny_model("whisper", "stack_mlp")
    styled.config.model_spec.prompt_style = "few-shot"
    return plain, styled


def clips():
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(int(s * RATE)).astype(np.float32) * 0.1, RATE) for s in (0.8, 1.6)]


def test_a_styled_model_is_asked_as_it_was_trained(models):
    _, model = models
    style = PROMPT_STYLES["few-shot"]
    audio = clips()
    stop = style.generate_options(model.processor.tokenizer)
    for request, call, question in [("question", lambda: model.ask(audio, "Who called?", max_new_tokens=6),
                                     "Who called?"),
                                    ("summary", lambda: model.summarize(audio, max_new_tokens=6), None),
                                    ("transcript", lambda: model.transcribe(audio, max_new_tokens=6), None)]:
        expected = [style.clean(a) for a in model.chat(
            [[{"role": "user", "content": style.parts(request, clip, question=question)}] for clip in audio],
            max_new_tokens=6, **stop)]
        assert call() == expected, request
    assert "\n" not in "".join(model.ask(audio, "Who called?", max_new_tokens=12))  # the completion ends at its line


def test_a_model_without_a_style_gets_the_plain_instruction(models):
    model, _ = models
    audio = clips()
    assert model.ask(audio[0], "Who called?", max_new_tokens=6) == model.chat(
        [prompt_message("Who called?", audio[0])], max_new_tokens=6)[0]
    assert model.summarize(audio, max_new_tokens=6) == model.chat(
        [[prompt_message(instructions("summarization")[0], clip)] for clip in audio], max_new_tokens=6)


def test_infer_instruction_asks_in_the_models_style(models, tmp_path):
    import soundfile as sf

    _, model = models
    samples, _ = clips()[0]
    path = tmp_path / "a.wav"
    sf.write(path, samples, RATE)
    from speechllm.inference import collect_inputs

    rows = list(infer_clips(model, collect_inputs([str(path)]), instruction="Who called?", max_new_tokens=6,
                            progress=False))
    assert rows[0]["answer"] == model.ask(str(path), "Who called?", max_new_tokens=6)  # a path string is a clip
