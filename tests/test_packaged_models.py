"""Packaged models by name: `speechllm.load("gemma-bridge")` finds the shipped folder, a missing one says it is not
installed, and a folder of the same name in the working directory wins over the name."""

import pytest

import speechllm
from speechllm.errors import ConfigError
from speechllm.models import packaged_model_names
from speechllm.testing import tiny_model
from tests.conftest import packaged_at, tone


def answer(model) -> str:
    clip = tone(0.8, seed=3)  # (samples, rate)
    content = [{"type": "text", "text": "Say "}, {"type": "audio", "audio": clip}]
    return model.chat([[{"role": "user", "content": content}]], max_new_tokens=6)[0]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two saved tiny models whose answers differ: {"zero": (folder, answer), "one": (folder, answer)}."""
    root = tmp_path_factory.mktemp("packaged")
    folders = {}
    for name, seed in (("zero", 0), ("one", 1)):
        model = tiny_model(seed=seed)
        model.save_pretrained(root / name)
        folders[name] = (root / name, answer(model))
    assert folders["zero"][1] != folders["one"][1]
    return folders


def test_both_shipped_names_are_registered():
    assert packaged_model_names()[:2] == ["default", "gemma-bridge"]


def test_a_packaged_name_loads_its_folder(saved, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no folder named like the packaged models here
    packaged_at(monkeypatch, "gemma-bridge", saved["one"][0])
    packaged_at(monkeypatch, "default", saved["zero"][0])
    assert answer(speechllm.load("gemma-bridge")) == saved["one"][1]
    assert answer(speechllm.load("default")) == answer(speechllm.load()) == saved["zero"][1]
    assert answer(speechllm.default_model()) == saved["zero"][1]


def test_a_missing_packaged_model_says_it_is_not_installed(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    packaged_at(monkeypatch, "gemma-bridge", tmp_path / "gemma_bridge")
    with pytest.raises(ConfigError, match=r"packaged model 'gemma-bridge' .* is not installed: .*gemma_bridge holds no "
                                          r"config.json; .*speechllm train gemma_bridge"):
        speechllm.load("gemma-bridge")


def test_an_existing_folder_wins_over_the_packaged_name(saved, monkeypatch, tmp_path):
    packaged_at(monkeypatch, "default", saved["zero"][0])
    tiny_model(seed=1).save_pretrained(tmp_path / "default")
    monkeypatch.chdir(tmp_path)
    assert answer(speechllm.load("default")) == saved["one"][1]  # ./default, not the packaged model
    assert answer(speechllm.load()) == saved["zero"][1]  # no argument: still the packaged default


def test_an_unknown_name_lists_the_packaged_models(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no model folder 'gemma'.*packaged model's name \['default', "
                                          r"'gemma-bridge'"):
        speechllm.load("gemma")
