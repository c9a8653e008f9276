import copy

import pytest
import torch
from transformers import AutoModel

import speechllm  # noqa: F401  (registers model_type "speechllm" with the Auto classes)
from speechllm.errors import ConfigError, InputError
from speechllm.models import SpeechLLMForConditionalGeneration, load
from speechllm.testing import tiny_model
from tests.conftest import tone


def ask(text, *clips):
    content = [{"type": "text", "text": text}] + [{"type": "audio", "audio": c} for c in clips]
    return [{"role": "user", "content": content}]


def logits(model, conversations):
    batch = model.processor(conversations)
    with torch.no_grad():
        return model(**batch).logits


def test_batched_greedy_generation_equals_one_at_a_time(tiny):
    # Batch 8 with mixed audio lengths, clip counts and prompt lengths.
    conversations = [
        ask("transcribe", tone(0.3 + 0.37 * i, freq=150 + 40 * i, seed=i)) if i % 3 else
        ask("compare these two clips " * (1 + i % 2), tone(0.5, seed=i), tone(1.1 + i / 10, seed=i + 9))
        for i in range(8)
    ]
    batch = tiny.processor(conversations)
    together = tiny.generate(**batch, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    for i, conversation in enumerate(conversations):
        alone = tiny.generate(**tiny.processor([conversation]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
        assert together[i].tolist() == alone[0].tolist(), f"row {i} differs"


def test_sampling_is_seeded_and_varies(tiny):
    batch = tiny.processor([ask("say something", tone(0.8))])
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        sampled = tiny.generate(**batch, max_new_tokens=10, min_new_tokens=10, do_sample=True, temperature=1.5)
        runs.append(sampled.tolist())
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_full_checkpoint_reloads_through_automodel_to_same_outputs(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, SpeechLLMForConditionalGeneration)
    conversation = [ask("transcribe", tone(1.3))]
    torch.testing.assert_close(logits(loaded, conversation), logits(tiny, conversation))


def _model_with_base_references(tmp_path, **overrides):
    """A tiny model whose encoder and LLM come from local directories, as hub ids would."""
    base = tiny_model(**overrides)
    base.encoder.model.save_pretrained(tmp_path / "encoder")
    base.language_model.save_pretrained(tmp_path / "llm")
    base.processor.tokenizer.save_pretrained(tmp_path / "llm")
    spec = base.config.model_spec
    spec.encoder.name_or_path, spec.encoder.hf_config = str(tmp_path / "encoder"), None
    spec.llm.name_or_path, spec.llm.hf_config = str(tmp_path / "llm"), None
    return spec


def _lora_model_with_base_references(tmp_path):
    """`_model_with_base_references` with LoRA on the LLM, its adapters randomised so that they matter."""
    spec = _model_with_base_references(tmp_path)
    spec.llm.train = "lora"
    model = SpeechLLMForConditionalGeneration.from_spec(spec).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model


def test_trainable_only_checkpoint_holds_only_trained_weights_and_reloads(tmp_path):
    model = _lora_model_with_base_references(tmp_path)
    model.save_pretrained(tmp_path / "ckpt", trainable_only=True)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "ckpt" / "trainable.safetensors")
    assert saved and all(k.startswith("connector.") or "lora_" in k for k in saved)
    reloaded = SpeechLLMForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    conversation = [ask("transcribe", tone(0.9))]
    torch.testing.assert_close(logits(reloaded, conversation), logits(model, conversation))


def test_merged_export_matches_lora_model(tmp_path):
    model = _lora_model_with_base_references(tmp_path)
    conversation = [ask("transcribe", tone(0.9))]
    before = logits(model, conversation)
    assert model.merge_adapters_in_place() is model  # in place, as the name says
    assert model.config.model_spec.llm.train == "full"
    model.save_pretrained(tmp_path / "merged")
    merged = AutoModel.from_pretrained(tmp_path / "merged")
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, conversation), before, atol=1e-4, rtol=1e-4)


def test_a_hub_checkpoint_brings_its_adapters_and_heads(tmp_path, monkeypatch):
    """A trainable-only checkpoint with heads, pushed to the hub and read back by repo id (here from the hub's cache
    layout, offline): the adapters and the heads come with it."""
    import shutil

    import huggingface_hub.constants
    import numpy as np

    from speechllm.heads import fit_heads

    model = _lora_model_with_base_references(tmp_path)
    features = {"pitch": np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)}
    model.attribute_heads = fit_heads(model.metadata_schema, {"Gender": ["pitch"]}, features,
                                      {"Gender": ["Male", "Female"] * 3})
    model.save_pretrained(tmp_path / "pushed", trainable_only=True)
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--speech-model" / "snapshots" / ("0" * 40)
    shutil.copytree(tmp_path / "pushed", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    from_hub = SpeechLLMForConditionalGeneration.from_pretrained("someone/speech-model")
    conversation = [ask("transcribe", tone(0.9))]
    torch.testing.assert_close(logits(from_hub, conversation), logits(model, conversation))
    assert from_hub.attribute_heads is not None and from_hub.attribute_heads.fields == ["Gender"]
    torch.testing.assert_close(from_hub.attribute_heads.state_dict(), model.attribute_heads.state_dict())


@pytest.mark.parametrize("name", ["runs/nothing/final", "mymodel", "./mymodel"])
def test_load_of_a_missing_local_folder_says_so(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no model folder .*does not exist") as caught:
        load(name, device="cpu")
    assert "\n" not in str(caught.value)


def test_load_of_an_unknown_hub_id_offline_says_it_is_not_cached(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = r"no model folder 'someone/nothing', and it is not in the offline hub cache"
    with pytest.raises(ConfigError, match=message) as caught:
        load("someone/nothing", device="cpu")
    assert "\n" not in str(caught.value)


def test_load_folds_adapters_for_inference_unless_asked_to_keep_them(tmp_path):
    model = _lora_model_with_base_references(tmp_path)
    conversation = [ask("transcribe", tone(0.9))]
    before = logits(model, conversation)
    model.save_pretrained(tmp_path / "adapters", trainable_only=True)
    served = load(str(tmp_path / "adapters"), device="cpu")
    assert not any("lora_" in n for n, _ in served.named_parameters())
    torch.testing.assert_close(logits(served, conversation), before, atol=1e-4, rtol=1e-4)
    kept = load(str(tmp_path / "adapters"), device="cpu", merge_adapters=False)
    assert any("lora_" in n for n, _ in kept.named_parameters())
    torch.testing.assert_close(logits(kept, conversation), before, atol=1e-4, rtol=1e-4)


def test_trainable_only_save_needs_base_references(tiny, tmp_path):
    with pytest.raises(ConfigError, match="name_or_path"):
        tiny.save_pretrained(tmp_path, trainable_only=True)


def test_loss_trains_only_the_answer(tiny):
    conversation = ask("transcribe", tone(0.5)) + [{"role": "assistant", "content": "hello world"}]
    batch = tiny.processor(conversation, add_generation_prompt=False)
    with torch.no_grad():
        out = tiny(**batch)
    assert torch.isfinite(out.loss)
    changed = batch["input_ids"].clone()
    prompt_positions = (batch["labels"] == -100) & (changed != tiny.processor.audio_token_id)
    # Changing the prompt changes the loss; the loss only counts answer tokens.
    answer_ids = tiny.processor.tokenizer("hello world</s>", add_special_tokens=False).input_ids
    assert int((batch["labels"] != -100).sum()) == len(answer_ids)
    assert prompt_positions.any()
    other = tiny.processor.tokenizer.convert_tokens_to_ids("the")
    changed[prompt_positions] = other
    with torch.no_grad():
        assert not torch.isclose(tiny(**{**batch, "input_ids": changed}).loss, out.loss)
    # The loss is the mean cross-entropy of predicting each answer token, and nothing else.
    targets, predicted = batch["labels"][:, 1:], out.logits[:, :-1]
    answer = targets != -100
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(predicted[answer], targets[answer]))


def test_placeholder_count_mismatch_is_a_clear_error(tiny):
    batch = tiny.processor([ask("transcribe", tone(0.5))])
    batch["audio_lengths"] = batch["audio_lengths"] // 3
    with pytest.raises(InputError, match="audio positions"):
        tiny(**batch)


def cross_attention_model(crop_to_length: bool = False):
    """Whisper's decoder reading a tiny Whisper encoder through cross-attention (the default model's design)."""
    from speechllm.testing import TINY_ENCODERS

    whisper = {**TINY_ENCODERS["whisper"], "decoder_start_token_id": 0, "pad_token_id": 2, "eos_token_id": 1,
               "bos_token_id": 0, "init_std": 0.3}
    return tiny_model(
        encoder={"crop_to_length": crop_to_length},
        connector={"type": "identity", "options": {}},
        llm={"hf_config": whisper, "coupling": "cross_attention"},
    )


@pytest.mark.parametrize("crop_to_length, seconds", [(False, [1.0, 35.0, 2.0]), (True, [0.6, 3.0, 1.5])])
def test_cross_attention_ignores_the_padding_of_longer_clips_in_the_batch(crop_to_length, seconds):
    """Clips of different encoder lengths (over 30 s, or cropped to length) answer in a batch as they do alone."""
    model = cross_attention_model(crop_to_length)
    conversations = [ask("transcribe", tone(s, freq=180 + 70 * i, seed=i)) for i, s in enumerate(seconds)]
    together = model.generate(**model.processor(conversations), max_new_tokens=6, min_new_tokens=6, do_sample=False)
    batch = model.processor(conversations)
    batched_logits = model(**batch).logits
    for i, conversation in enumerate(conversations):
        alone = model.processor([conversation])
        assert together[i].tolist() == model.generate(**alone, max_new_tokens=6, min_new_tokens=6,
                                                      do_sample=False)[0].tolist()
        width = alone["input_ids"].shape[1]  # prompts are left-padded to the longest
        torch.testing.assert_close(batched_logits[i, -width:], model(**alone).logits[0], atol=1e-4, rtol=1e-4)


def test_beam_search_with_cross_attention_answers_a_clip_batched_with_a_longer_one_as_alone():
    """Each row's beams must get that row's padding mask: beam search expands the batch to rows x beams."""
    model = cross_attention_model(crop_to_length=True)
    conversations = [ask("transcribe", tone(s, freq=180 + 70 * i, seed=i)) for i, s in enumerate([0.6, 3.0, 1.5])]
    options = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "num_beams": 3}
    together = model.generate(**model.processor(conversations), **options)
    for i, conversation in enumerate(conversations):
        assert together[i].tolist() == model.generate(**model.processor([conversation]), **options)[0].tolist(), i


def test_config_model_spec_is_the_spec_that_is_saved(tiny, tmp_path):
    from speechllm.models import SpeechLLMConfig

    config = copy.deepcopy(tiny.config)
    config.model_spec.llm.train = "full"  # a real attribute: the change sticks, and is what gets saved
    assert config.model_spec.llm.train == "full" and tiny.config.model_spec.llm.train == "frozen"
    config.save_pretrained(tmp_path)
    reloaded = SpeechLLMConfig.from_pretrained(tmp_path).model_spec
    assert reloaded.llm.train == "full" and reloaded.connector == config.model_spec.connector
    assert SpeechLLMConfig(config.model_spec).model_spec is not config.model_spec  # configs never share a spec


def test_cross_attention_coupling_batches_like_single_and_reloads(tmp_path):
    model = cross_attention_model()
    assert model.audio_token_count(16000) == 0  # the prompt holds no audio positions
    clips = [tone(0.4 + 0.5 * i, freq=200 + 90 * i, seed=i) for i in range(4)]
    conversations = [ask("transcribe", clip) for clip in clips]
    together = model.generate(**model.processor(conversations), max_new_tokens=8, min_new_tokens=8, do_sample=False)
    for i, conversation in enumerate(conversations):
        alone = model.generate(**model.processor([conversation]), max_new_tokens=8, min_new_tokens=8, do_sample=False)
        assert together[i].tolist() == alone[0].tolist()
    # The audio matters: another clip changes the logits.
    assert not torch.allclose(logits(model, [conversations[0]]), logits(model, [ask("transcribe", clips[3])]))
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    torch.testing.assert_close(logits(reloaded, [conversations[1]]), logits(model, [conversations[1]]))


def test_cross_attention_model_needs_exactly_one_clip_per_prompt():
    model = cross_attention_model()
    with pytest.raises(InputError, match="one clip"):
        model.generate(**model.processor([[{"role": "user", "content": "no audio here"}]]), max_new_tokens=2)


def test_lora_on_a_tied_decoder_saves_and_reloads(tmp_path):
    from speechllm.testing import TINY_ENCODERS

    whisper = {**TINY_ENCODERS["whisper"], "pad_token_id": 2, "eos_token_id": 1, "bos_token_id": 0, "init_std": 0.3}
    model = tiny_model(encoder={"crop_to_length": False}, connector={"type": "identity", "options": {}},
                       llm={"hf_config": whisper, "coupling": "cross_attention", "train": "lora",
                            "lora": {"target_modules": ["q_proj", "v_proj", "fc1"]}})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    conversation = [ask("transcribe", tone(0.6))]
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(logits(AutoModel.from_pretrained(tmp_path), conversation), logits(model, conversation))


def softcapped_model():
    """An LLM whose output head caps its logits (Gemma 2): logits_at must apply the cap, not just the projection."""
    from speechllm.testing import tiny_tokenizer

    gemma2 = {"model_type": "gemma2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
              "vocab_size": len(tiny_tokenizer()) + 8, "initializer_range": 0.2,
              "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
              "max_position_embeddings": 4096, "final_logit_softcapping": 2.0}
    return tiny_model(llm={"hf_config": gemma2})


@pytest.mark.parametrize("make", [lambda: tiny_model(llm={"train": "lora"}), cross_attention_model, softcapped_model],
                         ids=["prefix", "cross_attention", "softcapped_head"])
def test_logits_at_answer_positions_equal_the_full_logits_there(make):
    # Training computes the LLM head at answer positions only (Llama through `logits_to_keep`, Whisper's
    # decoder through its body and head); the values must be those of the full forward.
    from speechllm.training.losses import answer_positions

    model = make()
    conversations = [ask("transcribe", tone(0.4 + 0.3 * i, seed=i))
                     + [{"role": "assistant", "content": "hello world " * (i + 1)}] for i in range(3)]
    batch = model.processor(conversations, add_generation_prompt=False)
    labels = batch.pop("labels")
    mask = answer_positions(labels)
    with torch.no_grad():
        full = model(**batch).logits
        kept = model(**batch, logits_mask=mask).logits
    assert kept.shape == (int(mask.sum()), full.shape[-1])
    torch.testing.assert_close(kept, full[mask])


def test_scaled_adapters_interpolate_between_pretrained_and_fine_tuned_weights(tmp_path):
    model = _lora_model_with_base_references(tmp_path)
    with model.language_model.disable_adapter():
        pretrained = {n.replace(".base_layer", ""): p.clone()
                      for n, p in model.language_model.get_base_model().named_parameters() if "lora_" not in n}
    tuned = {n: p.clone() for n, p in copy.deepcopy(model).merge_adapters_in_place().language_model.named_parameters()}
    assert model.scale_adapters(0.25) > 0
    scaled = dict(model.merge_adapters_in_place().language_model.named_parameters())
    changed = 0
    for name, weight in scaled.items():
        expected = pretrained[name] + 0.25 * (tuned[name] - pretrained[name])
        torch.testing.assert_close(weight, expected, atol=1e-5, rtol=1e-5, msg=name)
        changed += not torch.equal(tuned[name], pretrained[name])
    assert changed, "the random adapters changed no weight"
