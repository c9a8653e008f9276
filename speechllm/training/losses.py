"""Training losses: cross-entropy on the answer, and distillation from the LLM reading the transcript.

All losses are sums over answer tokens; the trainer divides by the number of answer tokens in the whole
global batch (all processes, all accumulation steps), so a 2-process run computes the same gradient as
one process with the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

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
