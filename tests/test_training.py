import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from speechllm.data.toy import TONE_WORDS, build_tone_corpus
from speechllm.errors import ConfigError
from speechllm.pretrained import precision as cpu_support
from speechllm.testing import free_port, run_checked, tiny_tokenizer
from speechllm.training.config import load_train_config
from speechllm.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "speechllm" / "recipes" / "tiny.yaml"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    build_tone_corpus(folder, 240)
    build_tone_corpus(folder, 40, seed=1, name="dev")
    tiny_tokenizer().save_pretrained(folder / "tokenizer")  # as the README's set-up of the tiny recipe does
    return folder


def overrides(toy, out, *extra):
    return [
        f"tokenizer={toy / 'tokenizer'}",
        f"data.sources.0.manifest={toy / 'train.jsonl'}",
        f"eval_data.sources.0.manifest={toy / 'dev.jsonl'}",
        f"output_dir={out}",
        "report_to=[]",
        "eval_samples=0",
        *extra,
    ]


def final_state(out: Path) -> dict:
    path = out / "final" / "model.safetensors"
    return load_file(path)


@pytest.mark.slow
def test_tiny_model_learns_the_toy_task(toy, tmp_path):
    config = load_train_config(RECIPE, overrides(toy, tmp_path, "stages.0.steps=20", "stages.1.steps=50"))
    trainer = Trainer(config)
    trainer.train()
    losses = [h["loss"] for h in trainer.history if "loss" in h]
    assert losses[-1] < 0.2 * losses[0]
    model = trainer.model.eval()
    rows = [json.loads(line) for line in (toy / "dev.jsonl").read_text().splitlines()]
    answers = model.transcribe([str(toy / r["audio"]) for r in rows], max_new_tokens=6)
    accuracy = sum(a == r["transcript"] for a, r in zip(answers, rows)) / len(rows)
    assert accuracy >= 0.8, (accuracy, answers[:8])  # chance is 1/4
    # Even its mistakes are the task's words (or their starts: 6 tokens cut "very high" short).
    assert all(any(word.startswith(a) for word in TONE_WORDS.values()) for a in answers), answers


def small_run(toy, out, *extra):
    return overrides(toy, out, "stages.0.steps=4", "stages.1.steps=4", "stages.0.batch_size=4",
                     "stages.1.batch_size=4", "save_every=2", "eval_batches=1", *extra)


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_same_weights(toy, tmp_path):
    # Uninterrupted reference run, in a subprocess like the interrupted one.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "speechllm.cli", "train", str(RECIPE)]
    subprocess.run(cli + small_run(toy, tmp_path / "ref"), check=True, env=env, capture_output=True)
    # Killed without warning once a checkpoint of the second stage exists, then resumed.
    out = tmp_path / "killed"
    process = subprocess.Popen(cli + small_run(toy, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoint-1-0000002" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "final").exists()
    subprocess.run(cli + small_run(toy, out) + ["--resume"], check=True, env=env, capture_output=True)
    reference, resumed = final_state(tmp_path / "ref"), final_state(out)
    assert reference.keys() == resumed.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], atol=1e-5, rtol=1e-4, msg=name)


def test_data_loading_workers_change_nothing_but_speed(toy, tmp_path, monkeypatch):
    from speechllm.training.batches import StepBatches

    built_by = tmp_path / "pids"  # one file per process that prepared a step
    built_by.mkdir()
    prepare = StepBatches.__getitem__

    def recorded(self, step):
        (built_by / str(os.getpid())).touch()
        return prepare(self, step)

    monkeypatch.setattr(StepBatches, "__getitem__", recorded)
    states = {}
    for workers in (0, 2):
        out = tmp_path / f"workers{workers}"
        config = load_train_config(RECIPE, small_run(toy, out, "save_every=0",
                                                     f"num_workers={workers}"))
        Trainer(config).train()
        states[workers] = final_state(out)
    assert {p.name for p in built_by.iterdir()} - {str(os.getpid())}, "no worker process prepared a step"
    for name in states[0]:
        torch.testing.assert_close(states[2][name], states[0][name], atol=0, rtol=0, msg=name)


def test_negative_data_workers_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="num_workers"):
        load_train_config(RECIPE, ["num_workers=-1"])


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(toy, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["stages.0.steps=3", "stages.1.steps=3", "save_every=0", "eval_batches=1", "log_every=1"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes"]
    worker = str(ROOT / "tests" / "ddp_worker.py")
    one.mkdir(), two.mkdir()
    run_checked(launch + ["1", worker, str(RECIPE), str(one)] + overrides(toy, one, *common,
                "stages.0.batch_size=4", "stages.1.batch_size=4"), env=env)
    run_checked(launch + ["2", "--multi_gpu", "--main_process_port", str(free_port()), worker, str(RECIPE), str(two)]
                + overrides(toy, two, *common, "stages.0.batch_size=2", "stages.1.batch_size=2"), env=env)
    weight_files = (two / "rank0.safetensors", two / "rank1.safetensors", one / "rank0.safetensors")
    rank0, rank1, single = (load_file(p) for p in weight_files)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"ranks differ at {name}"
    def history(out):
        return [h["loss"] for h in json.loads((out / "final" / "history.json").read_text()) if "loss" in h]

    # The first update sees identical weights and the same global batch: the loss must match closely.
    # Later ones drift apart a little: Adam's first steps move each weight by about lr * sign(gradient),
    # and gradients that are nearly zero change sign with the order of float additions.
    assert history(two)[0] == pytest.approx(history(one)[0], rel=1e-5)
    assert history(two) == pytest.approx(history(one), rel=0.05)
    for name in rank0:
        torch.testing.assert_close(rank0[name], single[name], atol=0.02, rtol=0.05, msg=name)


def test_distillation_loss_is_zero_when_the_student_reads_the_transcript_embeddings():
    from speechllm.data.tasks import TrainingExample
    from speechllm.prompting import prompt_message
    from speechllm.testing import tiny_model
    from speechllm.training.batches import collate_examples
    from speechllm.training.losses import LossConfig, loss_sums
    from tests.conftest import tone

    model = tiny_model(llm={"train": "lora"})
    with torch.no_grad():  # adapters that change the student, so only the teacher path is the base LLM
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    processor = model.processor
    transcript = "the quick brown fox"
    n_tokens = len(processor.tokenizer(transcript, add_special_tokens=False).input_ids)
    processor.audio_token_count = lambda samples: n_tokens
    example = TrainingExample([prompt_message("Transcribe the audio.", tone(0.5)),
                               {"role": "assistant", "content": "the quick brown fox"}], [transcript], "asr", "x")
    batch = collate_examples(processor, [example], with_teacher=True)
    loss = LossConfig(cross_entropy=0.0, distill_logits=1.0, distill_hidden=1.0, hidden_layers=[1, 2])
    teacher_ids = batch["teacher"]["input_ids"]
    transcript_ids = torch.tensor(processor.tokenizer(transcript, add_special_tokens=False).input_ids)
    text_embeds = [model.get_input_embeddings()(transcript_ids)]
    student = dict(batch["student"], audio_embeds=text_embeds)
    assert student["input_ids"].shape == teacher_ids.shape
    with model.language_model.disable_adapter():  # the student equals the teacher: same LLM, same inputs
        sums = loss_sums(model, {"student": student, "teacher": batch["teacher"]}, loss)
        assert sums["distill_logits"].abs() < 1e-4 and sums["distill_hidden"].abs() < 1e-8
    # With the adapters on, the student differs and both terms are positive.
    sums = loss_sums(model, {"student": student, "teacher": batch["teacher"]}, loss)
    assert sums["distill_logits"] > 1e-3 and sums["distill_hidden"] > 1e-6


def test_recipe_with_unknown_key_fails_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="stepz"):
        load_train_config(RECIPE, ["stages.0.stepz=3"])


def test_bad_manifest_stops_the_run_with_file_and_line(tmp_path, toy):
    bad = tmp_path / "bad.jsonl"
    good = (toy / "train.jsonl").read_text().splitlines()[:3]
    rows = [json.loads(x) for x in good]
    for r in rows:
        r["audio"] = str(toy / r["audio"])
    rows[1]["audio"] = str(tmp_path / "missing.wav")
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "speechllm.cli", "train", str(RECIPE),
         *overrides(toy, tmp_path / "o", f"data.sources.0.manifest={bad}")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1
    assert "bad.jsonl:2" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
@pytest.mark.parametrize("native", [False, True])
def test_half_precision_on_a_cpu_without_native_support_falls_back_to_fp32(monkeypatch, caplog, native):
    import speechllm.training.precision as precision

    monkeypatch.setattr(cpu_support, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.INFO, logger="speechllm"):
        assert precision.resolve_precision("bf16") == ("bf16" if native else "fp32")
    assert ("no native support" in caplog.text) != native
    assert precision.resolve_precision("fp16") == "fp32"  # CPU autocast in fp16 is emulated everywhere
    assert precision.resolve_precision("auto") == ("bf16" if native else "fp32")
    assert precision.resolve_precision("fp32") == "fp32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's bf16 autocast")
def test_auto_precision_trains_under_bf16_autocast_on_a_cpu_with_native_bf16(toy, tmp_path, monkeypatch):
    """The weights stay fp32 (autocast, not a cast of the model); the LLM's matmuls run in bf16; losses are finite."""
    monkeypatch.setattr(cpu_support, "cpu_has_native_bf16", lambda: True)
    config = load_train_config(RECIPE, overrides(toy, tmp_path, "precision=auto", "stages.0.steps=2",
                                                 "stages.1.steps=2", "stages.0.batch_size=4", "stages.1.batch_size=4",
                                                 "save_every=0", "eval_batches=1", "log_every=1"))
    trainer = Trainer(config)
    seen = set()
    head = trainer.model.language_model.get_output_embeddings()
    head.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    trainer.train()
    losses = [h["loss"] for h in trainer.history if "loss" in h]
    assert trainer.accelerator.mixed_precision == "bf16" and seen == {torch.bfloat16}
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses), losses
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}


def test_adapter_scale_shrinks_the_trained_adapters_toward_the_pretrained_model(toy, tmp_path):
    states = {}
    for scale in (1.0, 0.5):
        out = tmp_path / f"scale{scale}"
        config = load_train_config(RECIPE, small_run(toy, out, "save_every=0", "model.llm.train=lora",
                                                     f"adapter_scale={scale}"))
        Trainer(config).train()
        states[scale] = final_state(out)
    adapters = [name for name in states[1.0] if ".lora_B." in name]
    assert adapters
    for name in states[1.0]:
        expected = states[1.0][name] * (0.5 if name in adapters else 1.0)  # only the update B @ A shrinks
        torch.testing.assert_close(states[0.5][name], expected, msg=name)


@pytest.mark.parametrize("scale", [0, -0.5, 1.5])
def test_adapter_scale_outside_zero_to_one_is_refused(scale):
    with pytest.raises(ConfigError, match="adapter_scale"):
        load_train_config(RECIPE, [f"adapter_scale={scale}", "model.llm.train=lora"])


def test_adapter_scale_without_lora_is_refused():
    with pytest.raises(ConfigError, match="no part of this model trains with LoRA"):
        load_train_config(RECIPE, ["adapter_scale=0.5"])  # the tiny recipe trains its LLM fully


@pytest.mark.parametrize("output_dir", ["taken", "taken/run"])
def test_an_output_dir_where_a_file_is_fails_before_training(tmp_path, output_dir):
    (tmp_path / "taken").write_text("not a folder")
    config = load_train_config(RECIPE, [f"output_dir={tmp_path / output_dir}"])
    with pytest.raises(ConfigError, match=r"'.*taken' is a file, not a folder"):
        Trainer(config)


def test_a_recipe_tokenizer_is_a_saved_folder_not_a_magic_name(toy, tmp_path):
    config = load_train_config(RECIPE, overrides(toy, tmp_path, "tokenizer=tiny"))
    with pytest.raises(ConfigError, match="tokenizer 'tiny': not a folder with a saved tokenizer"):
        Trainer(config)


@pytest.mark.slow
def test_resume_inside_the_first_stage_ends_with_the_same_weights_and_history(toy, tmp_path, monkeypatch, caplog):
    import speechllm.training.trainer as trainer_module
    from speechllm.training.checkpoints import list_checkpoints

    def recipe(out):
        return load_train_config(RECIPE, small_run(toy, out))  # saves at steps 2 and 4 of each stage

    reference = Trainer(recipe(tmp_path / "ref"))
    reference.train()

    class Interrupted(Exception):
        pass

    save = trainer_module.save_checkpoint

    def save_then_stop(accelerator, output_dir, stage, step, *args):
        save(accelerator, output_dir, stage, step, *args)
        if (stage, step) == (0, 2):
            raise Interrupted

    out = tmp_path / "interrupted"
    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        Trainer(recipe(out)).train()
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-0-0000002"]
    with caplog.at_level(logging.INFO, logger="speechllm"):
        resumed = Trainer(recipe(out))
        resumed.train(resume=True)
    assert "(stage 0, step 2)" in caplog.text
    reference_state, resumed_state = final_state(tmp_path / "ref"), final_state(out)
    assert reference_state.keys() == resumed_state.keys()
    for name in reference_state:
        assert torch.equal(resumed_state[name], reference_state[name]), name
    def scores(history):
        return [(h["stage"], h["step"], h.get("loss"), h.get("eval_loss")) for h in history if "step" in h]

    assert scores(resumed.history) == scores(reference.history)


@pytest.mark.slow
def test_an_hf_dataset_source_trains_like_the_same_rows_in_a_manifest(toy, tmp_path):
    import datasets

    rows = [json.loads(line) for line in (toy / "train.jsonl").read_text().splitlines()]
    columns = [{"path": str(toy / r["audio"]), "text": r["transcript"], "duration_s": r["duration_s"]} for r in rows]
    datasets.Dataset.from_list(columns).save_to_disk(str(tmp_path / "hf"))
    hf_source = (f"data.sources.0={{hf_dataset: {tmp_path / 'hf'}, "
                 "column_map: {path: audio, text: transcript}, task: asr}")
    states, histories = {}, {}
    for name, source in [("manifest", []), ("hf_dataset", [hf_source])]:
        out = tmp_path / name
        trainer = Trainer(load_train_config(RECIPE, small_run(toy, out, "stages.0.steps=2", "stages.1.steps=2",
                                                              "save_every=0", *source)))
        trainer.train()
        states[name], histories[name] = final_state(out), [h["loss"] for h in trainer.history if "loss" in h]
    assert histories["hf_dataset"] == histories["manifest"]
    for name in states["manifest"]:
        assert torch.equal(states["hf_dataset"][name], states["manifest"][name]), name
