"""Calibrating a head's confidence: Platt scaling of the chosen value's probability, fitted on held-out clips.

A head is a logistic regression fitted on a few thousand synthetic clips; its probabilities are sharper than its
accuracy (the default model answered pink noise "Female, 97.9%"). Platt scaling maps the probability p of the
value the head chose to sigmoid(a * logit(p) + b), with a and b fitted by maximum likelihood on whether that value
was right, on clips the head was not fitted on. It keeps the ranking of answers (so accuracy is unchanged) and
only changes what a confidence claims. Two numbers per field, saved in heads.json.
"""

from __future__ import annotations

import numpy as np
import torch

MIN_CALIBRATION_CLIPS = 40  # fewer labelled clips than this: fit the head on all of them and leave it uncalibrated
HOLDOUT_EVERY = 5  # every 5th labelled clip (20%) is held out of a head's fitting to calibrate it
_EPS = 1e-6


def _logit(p) -> torch.Tensor:
    p = torch.as_tensor(np.asarray(p, dtype=np.float64)).clamp(_EPS, 1 - _EPS)
    return torch.log(p) - torch.log1p(-p)


def fit_platt(confidences, correct, *, prior: float = 1e-2, steps: int = 100) -> dict:
    """{"method": "platt", "a", "b", "clips"} fitted on the chosen values' probabilities and whether each was
    right. A small pull towards the identity (a=1, b=0) keeps the fit sane when the held-out clips are few or all
    right."""
    x = _logit(confidences)
    y = torch.as_tensor(np.asarray(correct, dtype=np.float64))
    a = torch.ones((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([a, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a * x + b, y) + prior * ((a - 1) ** 2 + b ** 2)
        loss.backward()
        return loss

    optimizer.step(closure)
    return {"method": "platt", "a": a.item(), "b": b.item(), "clips": int(len(y))}


def apply_calibration(calibration: dict | None, confidences):
    """Calibrated confidences (same shape, as a numpy array) under `calibration`; unchanged when it is None."""
    p = np.asarray(confidences, dtype=np.float64)
    if not calibration:
        return p
    z = calibration["a"] * _logit(p).numpy() + calibration["b"]
    return 1.0 / (1.0 + np.exp(-z))


def holdout_mask(count: int) -> np.ndarray:
    """Which of `count` labelled clips are held out to calibrate (every HOLDOUT_EVERY-th); none when too few."""
    mask = np.zeros(count, dtype=bool)
    if count >= MIN_CALIBRATION_CLIPS:
        mask[HOLDOUT_EVERY - 1::HOLDOUT_EVERY] = True
    return mask
