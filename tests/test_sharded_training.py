"""Sharded training (`distributed: fsdp`) with 2 CPU processes over gloo, against one unsharded process."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from speechllm.errors import ConfigError
from speechllm.testing import free_port
from speechllm.training.config import load_train_config
from tests.test_training import RECIPE, ROOT, overrides, toy  # noqa: F401 (toy is a fixture)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# LoRA on the LLM, so every shard group mixes frozen weights and trained adapters; no adapter dropout, whose
# random masks depend on how the batch is split between processes.
LORA = ["model.llm.train=lora", "model.llm.lora.dropout=0"]


FSDP_CONFIG = ROOT / "speechllm" / "recipes" / "accelerate" / "fsdp.yaml"


def launch(processes: int, port: int, *arguments: str, config_file=None) -> list[str]:
    if config_file is not None:  # the shipped 8-GPU file, here with 2 CPU processes in fp32
        multi = ["--config_file", str(config_file), "--mixed_precision", "no", "--main_process_port", str(port)]
    else:
        multi = ["--multi_gpu", "--main_process_port", str(port)] if processes > 1 else []
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), *multi, *arguments]


def train_command(corpus, out, processes: int, port: int, *extra, config_file=None) -> list[str]:
    per_process = 4 // processes  # the same global batch of 4
    return launch(processes, port, "-m", "speechllm.cli", "train", str(RECIPE), config_file=config_file, *overrides(
        corpus, out, *LORA, "stages.0.steps=3", "stages.1.steps=3", f"stages.0.batch_size={per_process}",
        f"stages.1.batch_size={per_process}", "save_every=2", "eval_batches=1", "log_every=1", *extra))


def losses(out) -> list[float]:
    return [h["loss"] for h in json.loads((out / "final" / "history.json").read_text()) if "loss" in h]


@pytest.fixture(scope="module")
def runs(toy, tmp_path_factory):  # noqa: F811
    """An unsharded 1-process run, and an uninterrupted 2-process run of the same recipe sharded by the shipped
    accelerate config file (the recipe itself says `distributed: ddp`)."""
    folder = tmp_path_factory.mktemp("sharded")
    subprocess.run(train_command(toy, folder / "one", 1, 0), check=True, env=ENV, capture_output=True)
    subprocess.run(train_command(toy, folder / "fsdp", 2, free_port(), config_file=FSDP_CONFIG), check=True, env=ENV,
                   capture_output=True)
    return folder


@pytest.mark.slow
def test_two_sharded_processes_train_like_one_unsharded_process(runs):
    # The first step sees the same weights and the same global batch, so the same loss; with one scheduler step
    # per optimiser step and no dropout, the whole run stays within float rounding.
    assert losses(runs / "fsdp")[0] == pytest.approx(losses(runs / "one")[0], rel=1e-5)
    assert losses(runs / "fsdp") == pytest.approx(losses(runs / "one"), rel=1e-4)
    assert (runs / "fsdp" / "checkpoint-1-0000002" / "sharded").is_dir()  # model and optimiser saved in shards
    one, sharded = load_file(runs / "one" / "final" / "model.safetensors"), load_file(
        runs / "fsdp" / "final" / "model.safetensors")
    assert one.keys() == sharded.keys()
    for name in one:
        torch.testing.assert_close(sharded[name], one[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_sharded_run_killed_after_a_checkpoint_resumes_to_the_same_weights(runs, toy):  # noqa: F811
    out = runs / "killed"
    command = train_command(toy, out, 2, free_port(), "distributed=fsdp")  # the recipe's switch this time
    # Its own process group, so that SIGKILL takes the launcher and both workers at once, as a lost machine would.
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoint-1-0000002" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "final").exists()
    subprocess.run(train_command(toy, out, 2, free_port(), "distributed=fsdp") + ["--resume"], check=True, env=ENV,
                   capture_output=True)
    assert losses(out) == pytest.approx(losses(runs / "fsdp"), rel=1e-6)
    reference, resumed = load_file(runs / "fsdp" / "final" / "model.safetensors"), load_file(
        out / "final" / "model.safetensors")
    assert reference.keys() == resumed.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.slow
def test_trainable_save_from_sharded_weights_equals_the_unsharded_save(tmp_path):
    subprocess.run(launch(2, free_port(), str(ROOT / "tests" / "fsdp_worker.py"), str(tmp_path)), check=True, env=ENV,
                   capture_output=True)
    whole = load_file(tmp_path / "whole" / "trainable.safetensors")
    sharded = load_file(tmp_path / "sharded" / "trainable.safetensors")
    assert any("lora_" in name for name in whole) and any("connector" in name for name in whole)
    assert whole.keys() == sharded.keys()
    for name in whole:
        assert torch.equal(sharded[name], whole[name]), name
    # The whole model gathered from its shards (what the end of a sharded run saves) is the unsharded model.
    whole, sharded = load_file(tmp_path / "whole-full.safetensors"), load_file(tmp_path / "sharded-full.safetensors")
    assert whole.keys() == sharded.keys()
    for name in whole:
        assert torch.equal(sharded[name], whole[name]), name


def test_sharded_save_without_gathered_weights_is_refused_with_the_way_to_do_it(monkeypatch, tmp_path):
    from speechllm.models import loading
    from speechllm.testing import tiny_model

    model = tiny_model(llm={"train": "lora"})
    spec = model.config.model_spec
    spec.encoder.name_or_path, spec.llm.name_or_path = "base-encoder", "base-llm"
    monkeypatch.setattr(loading, "DTensor", torch.Tensor)  # every weight looks like a shard
    with pytest.raises(ConfigError, match="full_state_dict"):
        model.save_pretrained(tmp_path, trainable_only=True)


def test_distillation_with_sharding_is_refused_naming_the_alternative():
    with pytest.raises(ConfigError, match="distributed: ddp"):
        load_train_config(RECIPE, ["distributed=fsdp", "stages.0.loss.distill_logits=1.0"])
