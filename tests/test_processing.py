import pytest
import torch

from speechllm.errors import ConfigError, InputError
from speechllm.processing import IGNORE_INDEX
from tests.conftest import tone

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def user(*parts):
    content = [{"type": "audio", "audio": p} if isinstance(p, tuple) else {"type": "text", "text": p} for p in parts]
    return {"role": "user", "content": content}


def test_each_clip_expands_to_its_token_count(tiny):
    p = tiny.processor
    clips = [tone(0.5), tone(2.3, seed=1), tone(1.0, seed=2)]
    batch = p([user("compare ", clips[0], " with ", clips[1], " and ", clips[2])])
    ids = batch["input_ids"][0]
    expected = sum(tiny.audio_token_count(len(c[0])) for c in clips)
    assert int((ids == p.audio_token_id).sum()) == expected
    # Placeholders of different clips stay in order, with the text between them.
    runs = torch.diff(torch.nonzero(ids == p.audio_token_id).flatten())
    assert int((runs > 1).sum()) == 2
    assert batch["audio_values"].shape[0] == 3
    assert batch["audio_lengths"].tolist() == [len(c[0]) for c in clips]


def test_longer_audio_gets_more_tokens(tiny):
    counts = [tiny.audio_token_count(int(s * 16000)) for s in (0.5, 5, 29, 31, 65)]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


def test_training_prompt_is_byte_identical_to_inference_prompt(tiny):
    p = tiny.processor
    history = [user("transcribe ", tone(1.0)), {"role": "assistant", "content": "a tone"}, user("and now? ", tone(0.7, seed=3))]
    answer = {"role": "assistant", "content": "another tone"}
    train = p([history + [answer]], add_generation_prompt=False)
    infer = p([history], add_generation_prompt=True)
    n = int(infer["attention_mask"].sum())
    prompt_ids = infer["input_ids"][0, -n:]
    assert train["input_ids"][0, :n].tolist() == prompt_ids.tolist()
    # The labels start exactly where the inference prompt ends.
    labels = train["labels"][0]
    trained_after_prompt = labels[n:]
    assert (labels[:n][infer["input_ids"][0, -n:] == p.audio_token_id] == IGNORE_INDEX).all()
    assert trained_after_prompt[0] != IGNORE_INDEX
    assert p.tokenizer.decode(trained_after_prompt[trained_after_prompt != IGNORE_INDEX]) == "another tone</s>"


def test_labels_cover_every_answer_and_its_end_of_turn_only(tiny):
    p = tiny.processor
    conv = [user("hi ", tone(0.4)), {"role": "assistant", "content": "one"}, user("again"), {"role": "assistant", "content": "two"}]
    batch = p(conv, add_generation_prompt=False)
    labels = batch["labels"][0]
    trained = labels[labels != IGNORE_INDEX]
    assert p.tokenizer.decode(trained) == "one</s>two</s>"
    # Right padding for training.
    both = p([conv, conv[:2]], add_generation_prompt=False)
    assert both["attention_mask"][1, 0] == 1 and both["attention_mask"][1, -1] == 0


def test_generation_batches_are_left_padded(tiny):
    batch = tiny.processor([[user("a ", tone(0.3))], [user("a much longer question about ", tone(1.5))]])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
    assert "labels" not in batch


def test_tokenizer_chat_template_is_used_and_answers_end_at_end_of_turn():
    from speechllm.testing import tiny_model

    model = tiny_model(llm={"chat_template": CHATML})
    p = model.processor
    p.tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", p.audio_token]})
    p.end_of_turn_ids = p._find_end_of_turn_ids()
    conv = [user("hi ", tone(0.4)), {"role": "assistant", "content": "yes"}]
    batch = p(conv, add_generation_prompt=False)
    text = p.tokenizer.decode(batch["input_ids"][0])
    assert text.startswith("<|im_start|>user\nhi <|audio|>") and text.endswith("<|im_start|>assistant\nyes<|im_end|>\n")
    labels = batch["labels"][0]
    # "yes<|im_end|>" trains, the newline after it does not.
    assert p.tokenizer.decode(labels[labels != IGNORE_INDEX]) == "yes<|im_end|>"
    assert p.tokenizer.convert_tokens_to_ids("<|im_end|>") in p.end_of_turn_ids


def test_template_that_rewrites_history_is_refused(tiny):
    from speechllm.processing import SpeechLLMProcessor
    from speechllm.testing import tiny_tokenizer

    unstable = "{% for m in messages %}{{ m['content'] }}{% if loop.last %}!{% endif %}{% endfor %}"
    with pytest.raises(ConfigError, match="prefix-stable"):
        SpeechLLMProcessor(tiny_tokenizer(), lambda n: 1, chat_template=unstable)


@pytest.mark.parametrize(
    "conversation, message",
    [
        ("just a string", "list of messages"),
        ([{"role": "user"}], "'role' and 'content'"),
        ([{"role": "user", "content": [{"type": "video", "video": 1}]}], "unknown content part"),
        ([{"role": "user", "content": "say <|audio|>"}], "placeholder"),
        ([{"role": "user", "content": 5}], "string or a list"),
        ([{"role": "user", "content": [{"type": "text"}]}], "text part needs 'text'"),
        ([{"role": "user", "content": [{"type": "text", "text": None}]}], "text part needs 'text'"),
    ],
)
def test_malformed_conversations_get_clear_errors(tiny, conversation, message):
    with pytest.raises(InputError, match=message):
        tiny.processor(conversation)
