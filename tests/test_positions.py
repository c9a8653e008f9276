"""The LLM's position limit holds for every generation (issue 14, item 3): new tokens are cut to the positions a
prompt leaves (audio positions included), and a prompt that alone fills them is a clear InputError, never an
IndexError from inside the LLM."""

import pytest

from speechllm.errors import InputError
from speechllm.testing import tiny_llm_config, tiny_model, tiny_tokenizer
from tests.conftest import tone
from tests.test_modeling import cross_attention_model


@pytest.fixture(scope="module")
def whisper_decoder():
    """Whisper's decoder as the LLM: 448 learned positions, as in the default model."""
    return cross_attention_model(crop_to_length=True)


def words(n: int) -> str:
    return " ".join(["word"] * n)


def test_a_prompt_that_fills_the_positions_is_an_input_error(whisper_decoder):
    assert whisper_decoder.max_positions == 448
    with pytest.raises(InputError, match="448"):
        whisper_decoder.transcribe(tone(0.5), instruction=words(300), max_new_tokens=500)
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(255)]
    turns.append({"role": "user", "content": [{"type": "audio", "audio": tone(0.5)}]})
    with pytest.raises(InputError, match="conversation 0 takes"):
        whisper_decoder.chat(turns, max_new_tokens=8)


def test_new_tokens_stop_at_the_last_position(whisper_decoder):
    conversation = [{"role": "user", "content": [{"type": "text", "text": words(138)},
                                                 {"type": "audio", "audio": tone(0.5)}]}]
    batch = whisper_decoder.processor(conversation)
    room = 448 - batch["input_ids"].shape[1]
    assert 0 < room < 20
    tokens = whisper_decoder.generate(**batch, max_new_tokens=500, min_new_tokens=500)
    assert tokens.shape[1] == room
    assert isinstance(whisper_decoder.chat(conversation, max_new_tokens=500)[0], str)


def test_a_long_prompt_does_not_cut_short_the_answers_batched_with_it(whisper_decoder):
    near = [{"role": "user", "content": [{"type": "text", "text": words(140)}, {"type": "audio", "audio": tone(0.5)}]}]
    short = [{"role": "user", "content": [{"type": "text", "text": "what is said?"},
                                          {"type": "audio", "audio": tone(0.6, seed=1)}]}]
    alone = [whisper_decoder.chat(c, max_new_tokens=10, min_new_tokens=10)[0] for c in (near, short)]
    assert whisper_decoder.chat([near, short], max_new_tokens=10, min_new_tokens=10) == alone


def test_audio_positions_count_in_a_prefix_model():
    tokenizer = tiny_tokenizer()
    model = tiny_model(llm={"hf_config": tiny_llm_config(len(tokenizer) + 8, max_position_embeddings=96)})
    assert model.max_positions == 96
    long_clip = [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "audio", "audio": tone(8.0)}]}]
    with pytest.raises(InputError, match="at most 96"):  # 8 s are 100 audio positions
        model.chat(long_clip, max_new_tokens=4)
    with pytest.raises(InputError, match="metadata prompt"):
        model.generate_meta(tone(8.0), fields=["Gender"])
    short_clip = [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "audio", "audio": tone(1.0)}]}]
    batch = model.processor(short_clip)
    tokens = model.generate(**batch, max_new_tokens=500, min_new_tokens=500)
    assert tokens.shape[1] == 96 - batch["input_ids"].shape[1]
