"""Every packaged recipe (speechllm/recipes/) loads, and each replica's model builds with tiny stand-in weights of
the same structure (same encoder family, connector and LLM kind, train modes and LoRA settings; small widths)."""

from pathlib import Path

import pytest
import torch

from speechllm.errors import ConfigError
from speechllm.models import SpeechLLMForConditionalGeneration
from speechllm.testing import TINY_ENCODERS, tiny_llm_config, tiny_tokenizer
from speechllm.training.config import load_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "speechllm" / "recipes"


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_recipe_loads(recipe):
    config = load_train_config(recipe)
    assert config.stages


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("replica_*.yaml")), ids=lambda p: p.stem)
def test_replica_builds_with_stand_in_weights(recipe):
    spec = load_train_config(recipe).model
    assert spec.encoder.name_or_path and spec.llm.name_or_path  # real recipes name real checkpoints
    spec.encoder.name_or_path, spec.encoder.hf_config = None, TINY_ENCODERS[spec.encoder.family]
    tokenizer = tiny_tokenizer()
    spec.llm.name_or_path, spec.llm.hf_config = None, tiny_llm_config(len(tokenizer) + 8)
    if spec.connector.type == "window_qformer":
        spec.connector.options = {**spec.connector.options, "hidden_dim": 32, "heads": 2}
    model = SpeechLLMForConditionalGeneration.from_spec(spec, tokenizer=tokenizer)
    clip = (torch.randn(16000).numpy() * 0.1, 16000)
    conversation = [{"role": "user", "content": [{"type": "text", "text": "hi\n"}, {"type": "audio", "audio": clip}]},
                    {"role": "assistant", "content": "ok"}]
    out = model(**model.processor(conversation, add_generation_prompt=False))
    assert torch.isfinite(out.loss)
    trains = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    expected = {"connector"} | ({"encoder"} if spec.encoder.train != "frozen" else set())
    expected |= {"language_model"} if spec.llm.train != "frozen" else set()
    assert trains == expected
    if spec.llm.train == "lora":
        assert all("lora_" in n for n, p in model.language_model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("override, words", [("stages.0.steps=abc", "recipe.stages[0].steps: expected a whole number"),
                                             ("seed=1.5", "recipe.seed: expected a whole number"),
                                             ("feature_cache=3", "recipe.feature_cache: expected true or false"),
                                             ("stages.0.lr=fast", "recipe.stages[0].lr: expected a number")])
def test_a_value_of_the_wrong_type_fails_when_read(override, words):
    with pytest.raises(ConfigError) as caught:
        load_train_config(CONFIGS / "tiny.yaml", [override])
    assert words in str(caught.value)


def test_exponent_without_a_dot_is_a_number():
    assert load_train_config(CONFIGS / "tiny.yaml", ["stages.0.lr=1e-4"]).stages[0].lr == 1e-4


@pytest.mark.parametrize("override, words", [
    ("stages.9.steps=3", "stages is a list of 2 item(s), so '9' is not an index"),
    ("stages.x.steps=3", "'x' is not an index into it (use 0 to 1)"),
    ("log_every.x=3", "log_every is a value (10), not a section"),
])
def test_an_override_outside_the_recipe_names_the_key(override, words):
    assert len(load_train_config(CONFIGS / "tiny.yaml").stages) == 2
    with pytest.raises(ConfigError) as caught:
        load_train_config(CONFIGS / "tiny.yaml", [override])
    assert words in str(caught.value) and override.split("=")[0] in str(caught.value)


def test_a_folder_is_not_a_recipe(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_train_config(tmp_path)


@pytest.mark.parametrize("override", ["stages.1.steps=0", "stages.0.steps=-5", "stages.1.batch_size=0",
                                      "stages.0.grad_accum=0", "stages.1.lr=-0.5", "stages.0.warmup_steps=-1",
                                      "stages.0.weight_decay=-0.1", "stages.0.max_grad_norm=-1"])
def test_stage_numbers_out_of_range_fail_when_read(override):
    key, value = override.split("=")
    index, name = key.split(".")[1:]
    with pytest.raises(ConfigError, match=rf"stages\[{index}\]\.{name} must be .* or more, got {value}"):
        load_train_config(CONFIGS / "tiny.yaml", [override])
