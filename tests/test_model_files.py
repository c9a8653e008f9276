"""Model folders are data, never code: a config's `auto_map` runs nothing and asks nothing, and a damaged file
gives a ConfigError naming it instead of a library's traceback."""

import builtins
import json
import shutil

import pytest

import speechllm
from speechllm.errors import ConfigError
from speechllm.models import SpeechLLMForConditionalGeneration
from speechllm.testing import tiny_spec, tiny_tokenizer

EVIL_CODE = """
from pathlib import Path
Path(__file__).with_name("ran").write_text("the folder's code ran")
from transformers import LlamaConfig, LlamaForCausalLM
class EvilConfig(LlamaConfig):
    model_type = "evil_llama"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
"""


@pytest.fixture
def remote_code_folder(tmp_path, monkeypatch):
    """A base-LLM folder whose config maps its classes to a Python file that leaves a mark when it runs; and a
    terminal that would answer "y" if transformers asked."""
    folder = tmp_path / "evil-llm"
    folder.mkdir()
    (folder / "evil.py").write_text(EVIL_CODE)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil_llama", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"},
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
        "vocab_size": 500}))
    monkeypatch.setattr(builtins, "input", lambda *args: "y")
    return folder


def test_a_config_with_auto_map_runs_no_code_as_base_llm(remote_code_folder):
    spec = tiny_spec(llm={"name_or_path": str(remote_code_folder), "hf_config": None})
    with pytest.raises(ConfigError, match=r"evil-llm: its config asks to run Python code .*auto_map.*never runs"):
        SpeechLLMForConditionalGeneration.from_spec(spec, tokenizer=tiny_tokenizer())
    assert not (remote_code_folder / "ran").exists()


def test_a_config_with_auto_map_runs_no_code_as_a_model_folder(remote_code_folder):
    with pytest.raises(ConfigError, match="never runs a model folder's code"):
        speechllm.load(remote_code_folder)
    assert not (remote_code_folder / "ran").exists()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from speechllm.testing import tiny_model

    path = tmp_path_factory.mktemp("saved")
    tiny_model().save_pretrained(path)
    return path


@pytest.mark.parametrize("name, words", [
    ("model.safetensors", "cut short"), ("config.json", "not valid JSON"), ("tokenizer.json", "not valid JSON"),
    ("tokenizer_config.json", "not valid JSON"), ("chat_template.jinja", "not a valid jinja template"),
])
def test_a_truncated_file_in_a_model_folder_is_named(saved, tmp_path, name, words):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=f"{folder / name} is damaged \\({words}"):
        speechllm.load(folder)
