"""Checkpoint folders a user or a crash damaged: an unreadable trainer_state.json is named and skipped, never
fatal to a later run that saves into the same output folder, and never deleted quietly."""

import json
import logging

from accelerate import Accelerator

from speechllm.training.checkpoints import STATE_FILE, list_checkpoints, resume_point, save_checkpoint


def checkpoint(out, name, state):
    folder = out / name
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text(state if isinstance(state, str) else json.dumps(state))
    return folder


def test_an_unreadable_trainer_state_is_skipped_with_a_warning(tmp_path, caplog):
    good = checkpoint(tmp_path, "checkpoint-0-0000002", {"stage": 0, "step": 2, "order": 2, "history": [{"a": 1}]})
    cut = checkpoint(tmp_path, "checkpoint-0-0000004", '{"stage": 0, "step": 4, "ord')  # truncated
    odd = checkpoint(tmp_path, "checkpoint-0-0000006", '["not", "a", "state"]')
    with caplog.at_level(logging.WARNING, logger="speechllm"):
        assert list_checkpoints(tmp_path) == [good]
        point = resume_point(tmp_path)
    assert (point.checkpoint, point.stage, point.step, point.history) == (good, 0, 2, [{"a": 1}])
    for bad in (cut, odd):
        assert f"skipping checkpoint {bad}" in caplog.text and str(bad / STATE_FILE) in caplog.text


def test_a_run_saving_beside_a_damaged_checkpoint_keeps_going(tmp_path):
    cut = checkpoint(tmp_path, "checkpoint-0-0000004", '{"stage": 0, "st')
    accelerator = Accelerator(cpu=True)
    for step in (2, 6, 8):
        save_checkpoint(accelerator, tmp_path, 0, step, [{"step": step}], keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-0-0000008"]
    assert cut.exists() and (cut / STATE_FILE).read_text() == '{"stage": 0, "st'  # left for the user to look at
    assert resume_point(tmp_path).step == 8
