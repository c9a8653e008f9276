import pytest
import torch

from speechllm.errors import ConfigError, InputError
from speechllm.models.processing import IGNORE_INDEX
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
    history = [user("transcribe ", tone(1.0)), {"role": "assistant", "content": "a tone"},
               user("and now? ", tone(0.7, seed=3))]
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
    conv = [user("hi ", tone(0.4)), {"role": "assistant", "content": "one"},
            user("again"), {"role": "assistant", "content": "two"}]
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
    from speechllm.models.processing import SpeechLLMProcessor
    from speechllm.testing import tiny_spec, tiny_tokenizer

    unstable = "{% for m in messages %}{{ m['content'] }}{% if loop.last %}!{% endif %}{% endfor %}"
    with pytest.raises(ConfigError, match="prefix-stable"):
        SpeechLLMProcessor(tiny_tokenizer(), tiny_spec(llm={"chat_template": unstable}))


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


# -- the processor stands alone ----------------------------------------------------------------------------------

def mixed_batch():
    """Conversations with clips of several lengths (one under Whisper's minimum, one over 30 s), for training."""
    return [
        [user("compare ", tone(0.5), " with ", tone(2.3, seed=1)), {"role": "assistant", "content": "the first"}],
        [user("transcribe ", tone(0.01, seed=2)), {"role": "assistant", "content": "nothing"}],
        [user("and this? ", tone(31.0, seed=3)), {"role": "assistant", "content": "a long tone"}],
    ]


def assert_same_batches(processor, reference, conversations):
    for kwargs in ({"add_generation_prompt": False}, {"add_generation_prompt": True}):
        prompts = conversations if not kwargs["add_generation_prompt"] else [c[:-1] for c in conversations]
        got, expected = processor(prompts, **kwargs), reference(prompts, **kwargs)
        assert sorted(got) == sorted(expected)
        for key in expected:
            assert torch.equal(got[key], expected[key]), key
    assert processor.end_of_turn_ids == reference.end_of_turn_ids
    assert processor.audio_limits == reference.audio_limits


def test_a_saved_model_folder_gives_the_same_batches_through_autoprocessor(tiny, tmp_path):
    from transformers import AutoProcessor

    from speechllm.models.processing import SpeechLLMProcessor

    tiny.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, SpeechLLMProcessor)
    assert_same_batches(loaded, tiny.processor, mixed_batch())


def test_a_processor_saves_alone_and_reloads_without_any_model_weights(tiny, tmp_path):
    from transformers import AutoProcessor

    tiny.processor.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.safetensors")) and not (tmp_path / "config.json").exists()
    assert_same_batches(AutoProcessor.from_pretrained(tmp_path), tiny.processor, mixed_batch())


def test_a_model_folder_saved_before_processors_saved_themselves_still_loads_one(tiny, tmp_path):
    from transformers import AutoProcessor

    tiny.save_pretrained(tmp_path)
    (tmp_path / "processor_config.json").unlink()  # as the checkpoints written before it existed
    assert_same_batches(AutoProcessor.from_pretrained(tmp_path), tiny.processor, mixed_batch())


def test_the_processor_goes_to_a_dataloader_worker(tiny):
    import pickle

    assert_same_batches(pickle.loads(pickle.dumps(tiny.processor)), tiny.processor, mixed_batch())


@pytest.mark.parametrize("family, connector", [("whisper", "window_qformer"), ("hubert", "speechllm_cnn"),
                                               ("wav2vec2", "pool_linear"), ("wavlm", "stack_mlp")])
def test_token_counts_from_the_spec_alone_equal_the_built_parts(family, connector):
    """The processor counts with no weights; the count must be what the built encoder and connector output."""
    from speechllm.models import SpeechLLMProcessor, audio_token_count
    from speechllm.testing import tiny_model, tiny_tokenizer

    model = tiny_model(family, connector, encoder={"window_seconds": 1.0})
    processor = SpeechLLMProcessor(tiny_tokenizer(), model.config.model_spec)
    for n in [1, 399, 400, 401, 5000, 16000, 16001, 40000, 160000 + 7]:
        built = model.connector.output_length(model.encoder.output_length(n))
        assert processor.audio_token_count(n) == audio_token_count(model.config.model_spec, n) == built, n
    assert processor.min_samples == model.encoder.min_samples


def test_the_processor_takes_waveforms_and_says_how_to_load_anything_else(tiny, tmp_path):
    import soundfile as sf

    from speechllm.audio import load_conversation_audio

    wav = tmp_path / "clip.wav"
    sf.write(wav, tone(0.7)[0], 16000)
    with pytest.raises(InputError, match="load_conversation_audio"):
        tiny.processor([{"role": "user", "content": [{"type": "audio", "audio": str(wav)}]}])
    with pytest.raises(InputError, match="8000 Hz"):
        tiny.processor([user("transcribe ", (tone(0.7)[0], 8000))])
    loaded = load_conversation_audio([{"role": "user", "content": [{"type": "audio", "audio": str(wav)}]}],
                                     **tiny.processor.audio_limits)
    batch = tiny.processor(loaded)
    assert batch["audio_lengths"].tolist() == [len(tone(0.7)[0])]
