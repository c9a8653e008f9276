"""Training losses: cross-entropy on the answer, and distillation from the LLM reading the transcript.

All losses are sums over answer tokens; the trainer divides by the number of answer tokens in the whole
global batch (all processes, all accumulation steps), so a 2-process run computes the same gradient as
one process with the same global batch. `loss_sums` runs the model on one micro-batch and returns them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel

from ..models import logits_at
from ..models.processing import IGNORE_INDEX


@dataclass
class LossConfig:
    """Weights of each term; distillation terms need transcripts (seed 002 uses 0.5 / 0.5 / 1.0)."""

    cross_entropy: float = 1.0
    distill_logits: float = 0.0
    distill_hidden: float = 0.0
    temperature: float = 1.0
    hidden_layers: list[int] = field(default_factory=lambda: [-1])

    @property
    def distills(self) -> bool:
        return self.distill_logits > 0 or self.distill_hidden > 0

    def weighted(self, sums: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training objective: each summed term times its weight."""
        return sum(getattr(self, name) * value for name, value in sums.items())


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """(batch, seq) labels -> boolean mask of positions whose *next* token is a trained answer token."""
    predicts = torch.zeros_like(labels, dtype=torch.bool)
    predicts[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return predicts


def at_answers(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logits at answer positions, (answer tokens, vocab): taken from full (batch, seq, vocab) logits, or
    passed through when the model computed them there only (`model(..., logits_mask=answer_positions(labels))`)."""
    return logits[answer_positions(labels)] if logits.dim() == 3 else logits


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over answer tokens; `logits` as `at_answers` takes them."""
    targets = labels[:, 1:][answer_positions(labels)[:, :-1]]
    return F.cross_entropy(at_answers(logits, labels).float(), targets, reduction="sum")


def distillation_sums(
    student_logits, teacher_logits, student_hidden, teacher_hidden, student_labels, teacher_labels, config: LossConfig
) -> dict[str, torch.Tensor]:
    """Summed soft cross-entropy (with temperature) and hidden-state MSE between the audio run and the
    text run, on answer positions only (logits as `at_answers` takes them). The answers are the same tokens
    in both runs, in the same order, so the k-th answer position of one matches the k-th of the other."""
    s_mask, t_mask = answer_positions(student_labels), answer_positions(teacher_labels)
    sums = {}
    if config.distill_logits > 0:
        t = config.temperature
        teacher = F.softmax(at_answers(teacher_logits, teacher_labels).float() / t, dim=-1)
        student = F.log_softmax(at_answers(student_logits, student_labels).float() / t, dim=-1)
        # Soft cross-entropy minus the teacher's entropy (= KL), so a perfect student scores exactly 0.
        entropy = (teacher * teacher.clamp_min(1e-12).log()).sum(-1)
        sums["distill_logits"] = ((-(teacher * student).sum(-1) + entropy).sum()) * t * t
    if config.distill_hidden > 0:
        total = 0.0
        for layer in config.hidden_layers:
            diff = student_hidden[layer][s_mask].float() - teacher_hidden[layer][t_mask].float()
            total = total + (diff**2).mean(-1).sum()
        sums["distill_hidden"] = total
    return sums


def teacher_outputs(language_model, teacher: dict, hidden_states: bool):
    """The teacher's logits (at answer positions) and hidden states: the base LLM reading the transcript in place
    of the audio, with its LoRA adapters off and no gradients."""
    adapters_off = getattr(language_model, "disable_adapter", contextlib.nullcontext)
    with torch.no_grad(), adapters_off():
        return logits_at(language_model, answer_positions(teacher["labels"]), input_ids=teacher["input_ids"],
                         attention_mask=teacher["attention_mask"], output_hidden_states=hidden_states)


def loss_sums(model, batch: dict, loss: LossConfig, cache=None) -> dict[str, torch.Tensor]:
    """Summed loss terms of one micro-batch {"student": inputs with labels, "teacher": text inputs or None}.

    `model` may be wrapped for data parallelism; `cache` (a FeatureCache) replaces the frozen encoder's pass.
    Returns {"cross_entropy": ...} plus "distill_logits" / "distill_hidden" when `loss` weighs them.
    """
    student = dict(batch["student"])
    labels = student.pop("labels")
    if cache is not None and "audio_values" in student:
        student["audio_features"] = cache.features(student.pop("audio_values"), student.pop("audio_lengths"))
    hidden = loss.distill_hidden > 0
    # Logits at answer positions only: the rest carry no loss.
    out = model(**student, logits_mask=answer_positions(labels), output_hidden_states=hidden)
    sums = {"cross_entropy": cross_entropy_sum(out.logits, labels)}
    if loss.distills:
        teacher = batch["teacher"]
        t_out = teacher_outputs(extract_model_from_parallel(model).language_model, teacher, hidden)
        sums.update(distillation_sums(
            out.logits, t_out.logits, out.hidden_states, t_out.hidden_states, labels, teacher["labels"], loss,
        ))
    return sums
