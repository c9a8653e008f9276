"""Checkpoints of a run in its output folder: atomic saves, keep-last-N retention, the point to resume from,
and the final model.

A checkpoint is `output_dir/checkpoint-<stage>-<step>`: accelerate's full state (model, optimiser, scheduler,
random generators) plus `trainer_state.json` (stage, step, the history so far). Every folder is written under a
temporary name and renamed, so a crash mid-save never leaves a checkpoint or final model that could be loaded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator

STATE_FILE = "trainer_state.json"
log = logging.getLogger(__name__)
_warned: set[str] = set()


@dataclass
class ResumePoint:
    """Where a resumed run starts: the checkpoint, its stage index and step, and the history up to it."""

    checkpoint: Path | None = None
    stage: int = 0
    step: int = 0
    history: list[dict] | None = None


def _read_state(checkpoint: Path) -> dict | None:
    """A checkpoint's trainer state, or None (with a warning naming the file) when it is unreadable: a
    truncated or hand-edited file must not stop every later run that saves into the same folder."""
    path = checkpoint / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(state, dict) and all(isinstance(state.get(k), int) for k in ("stage", "step", "order")) \
                and isinstance(state.get("history"), list):
            return state
        reason = "it lacks stage, step, order or history"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = str(e)
    if str(path) not in _warned:  # once per file: retention lists the checkpoints after every save
        _warned.add(str(path))
        log.warning("skipping checkpoint %s: %s is unreadable (%s); it is left in place, neither resumed from nor "
                    "deleted", checkpoint, path, reason)
    return None


def _readable_checkpoints(output_dir: Path) -> list[tuple[Path, dict]]:
    found = [p for p in sorted(Path(output_dir).glob("checkpoint-*")) if (p / STATE_FILE).exists()]
    states = [(p, _read_state(p)) for p in found]
    return sorted([(p, s) for p, s in states if s is not None], key=lambda item: item[1]["order"])


def list_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints in `output_dir`, oldest first (temporary folders of interrupted saves are not,
    nor checkpoints whose trainer_state.json cannot be read: those are named in a warning and left alone)."""
    return [p for p, _ in _readable_checkpoints(output_dir)]


def resume_point(output_dir: Path) -> ResumePoint:
    """The latest readable checkpoint of `output_dir` to resume from, or a fresh start when there is none."""
    found = _readable_checkpoints(output_dir)
    if not found:
        return ResumePoint()
    path, state = found[-1]
    return ResumePoint(path, state["stage"], state["step"], state["history"])


def _replace_atomically(temporary: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)


def save_checkpoint(accelerator: Accelerator, output_dir: Path, stage_index: int, step: int, history: list[dict],
                    keep: int, also_save: Callable[[Path], None] | None = None) -> Path:
    """Save the prepared objects' state after `step` of stage `stage_index`, then delete all but the last `keep`
    checkpoints. Every process calls it (accelerate saves each one's random state); the main one writes the rest.
    `also_save(folder)`, called on every process, adds what accelerate does not hold (sharded model and optimiser)."""
    name = f"checkpoint-{stage_index}-{step:07d}"
    final = output_dir / name
    temporary = output_dir / f".tmp-{name}"
    if accelerator.is_main_process and temporary.exists():  # left by a save that crashed
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    if also_save is not None:
        also_save(temporary)
    if accelerator.is_main_process:
        state = {"stage": stage_index, "step": step, "order": stage_index * 10**9 + step, "history": history}
        (temporary / STATE_FILE).write_text(json.dumps(state))
        if final.exists() and _read_state(final) is None:
            log.warning("replacing the unreadable checkpoint %s with this run's save of the same step", final)
        _replace_atomically(temporary, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def save_final_model(model, output_dir: Path, history: list[dict]) -> Path:
    """Write `output_dir/final`: the model (trained weights plus base references when every part has a
    `name_or_path`, else every weight) and `history.json`. Call it on the main process only."""
    final = output_dir / "final"
    spec = model.config.model_spec
    references = all(p is None or p.name_or_path for p in (spec.encoder, spec.fusion_encoder, spec.llm))
    temporary = output_dir / ".tmp-final"
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary, trainable_only=references)
    (temporary / "history.json").write_text(json.dumps(history, indent=1))
    _replace_atomically(temporary, final)
    return final
