"""Fitting attribute heads: logistic regression by L-BFGS on clip features, from arrays or a model's manifests."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..audio import load_audio
from ..errors import ConfigError
from ..metadata import MetadataSchema
from .calibration import fit_platt, holdout_mask
from .encoder import encode_for_heads
from .extractors import PretrainedExtractors
from .features import clip_features
from .model import AttributeHeads, field_values


def fit_head(x: np.ndarray, y: np.ndarray, classes: int, *, l2: float = 1e-3, steps: int = 200) -> tuple:
    """Logistic regression by L-BFGS on standardised inputs, classes weighted by inverse frequency so that a
    rare class (a few non-speech clips among many speech ones) is not ignored. Returns (mean, scale, weight, bias)."""
    x = torch.from_numpy(x).double()
    mean, scale = x.mean(0), x.std(0)
    scale = torch.where(scale > 1e-6, scale, torch.ones_like(scale))  # a constant feature: leave it unscaled
    z = (x - mean) / scale
    target = torch.from_numpy(y).long()
    counts = torch.bincount(target, minlength=classes).double()
    class_weight = torch.where(counts > 0, len(target) / (classes * counts.clamp_min(1)), torch.zeros_like(counts))
    weight = torch.zeros(classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(z @ weight.T + bias, target, weight=class_weight) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return mean.float(), scale.float(), weight.detach().float(), bias.detach().float()


def fit_heads(schema: MetadataSchema, head_features: dict[str, list[str]], features: dict[str, np.ndarray],
              labels: dict[str, list], *, l2: float = 1e-3,
              extractors: PretrainedExtractors | None = None) -> AttributeHeads:
    """Heads for the fields of `head_features` ({field: [feature names]}), fitted on `features` ({feature name:
    (clips, k) array}) and `labels` ({field: per-clip value or None}); clips whose label is None are left out.
    With at least MIN_CALIBRATION_CLIPS labelled clips, every HOLDOUT_EVERY-th is held out of a head's fitting and
    its confidence is calibrated on them (calibration.py); with fewer, the head fits on all and stays uncalibrated.
    The heads keep `extractors` (the models that computed `features`, if any) to predict with."""
    spec, fitted, held_out = {}, {}, {}
    for name, names in head_features.items():
        values = field_values(schema.field(name))
        keep = [i for i, v in enumerate(labels[name]) if v is not None]
        if len({labels[name][i] for i in keep}) < 2:
            raise ConfigError(f"head for {name!r}: the training clips need at least two different values")
        x = np.concatenate([features[f] for f in names], axis=1)[keep]
        y = np.array([values.index(labels[name][i]) for i in keep])
        held = holdout_mask(len(keep))
        if len(set(y[~held].tolist())) < 2:  # the held-out clips took a whole class: fit on all, uncalibrated
            held[:] = False
        fitted[name] = fit_head(x[~held], y[~held], len(values), l2=l2)
        held_out[name] = (x[held], y[held])
        spec[name] = {"features": list(names), "width": x.shape[1]}
    heads = AttributeHeads(schema, spec, extractors)
    for name, (mean, scale, weight, bias) in fitted.items():
        head = heads.heads[name]
        head.mean.copy_(mean)
        head.scale.copy_(scale)
        head.linear.weight.data.copy_(weight)
        head.linear.bias.data.copy_(bias)
        x, y = held_out[name]
        if len(y):
            with torch.no_grad():
                probs = head.linear((torch.from_numpy(x).float() - head.mean) / head.scale).softmax(-1).numpy()
            heads.spec[name]["calibration"] = fit_platt(probs.max(1), probs.argmax(1) == y)
    return heads.eval()


def calibrate_heads(heads: AttributeHeads, features: dict[str, np.ndarray], labels: dict[str, list]) -> dict:
    """Refit the calibration of each head with labels, on held-out clips (never the clips you report on):
    `features` as `clip_features` gives them, `labels` {field: per-clip value or None}. Returns {field:
    calibration}; the heads then answer calibrated confidences (saved with them)."""
    out = {}
    for name in heads.fields:
        if name not in labels:
            continue
        values = field_values(heads.schema.field(name))
        keep = [i for i, v in enumerate(labels[name]) if v is not None]
        if not keep:
            continue
        with torch.no_grad():
            probs = heads.heads[name]({f: features[f][keep] for f in heads.heads[name].features}).numpy()
        truth = np.array([values.index(labels[name][i]) for i in keep])
        out[name] = heads.spec[name]["calibration"] = fit_platt(probs.max(1), probs.argmax(1) == truth)
    return out


def model_clip_features(model, clips: Sequence[np.ndarray], names: Sequence[str], *, batch_size: int = 16,
                        progress: bool = False,
                        extractors: PretrainedExtractors | None = None) -> dict[str, np.ndarray]:
    """The features `names` of 16 kHz clips, with the model's encoder where a feature needs it (batched). The
    `vad` and `voice` models come from `extractors`; without one they load for this call alone."""
    from tqdm import tqdm

    from ..audio import pad_batch

    extractors = extractors if extractors is not None else PretrainedExtractors()
    out: dict[str, list] = {n: [] for n in names}
    starts = range(0, len(clips), batch_size)
    for start in tqdm(starts, desc=f"head features ({', '.join(names)})", unit="batch", disable=not progress):
        group = list(clips[start:start + batch_size])
        values, lengths = pad_batch([torch.from_numpy(np.asarray(c, dtype=np.float32)) for c in group])
        frames, _ = encode_for_heads(model, values, lengths, set(names))
        for name, value in clip_features(names, group, frames, extractors).items():
            out[name].append(value)
    return {n: np.concatenate(v) for n, v in out.items()}


def labelled_clips(model, manifests: Sequence, fields: Sequence[str], *,
                   progress: bool = True) -> tuple[list[np.ndarray], dict[str, list]]:
    """The clips of the manifests' records, read as `model` reads audio, and each field's per-clip value (None
    where a record does not give it)."""
    from tqdm import tqdm

    from ..data.manifest import read_manifest

    schema = model.metadata_schema
    records = [r for m in manifests for r in read_manifest(m, schema)]
    clips, labels = [], {name: [] for name in fields}
    for record in tqdm(records, desc="head features: audio", disable=not progress, leave=False):
        clips.append(load_audio(record.audio_source(), **model.processor.audio_limits))
        values = record.metadata(schema)
        for name in fields:
            labels[name].append(values.get(name))
    return clips, labels


def fit_model_heads(model, manifests: Sequence, head_features: dict[str, list[str]], *, batch_size: int = 16,
                    progress: bool = True) -> AttributeHeads:
    """Fit `model`'s attribute heads ({field: [features]}) on labelled training manifests and attach them."""
    schema = model.metadata_schema
    for name in head_features:
        field_values(schema.field(name))  # a text or unknown field fails here, by name
    clips, labels = labelled_clips(model, manifests, list(head_features), progress=progress)
    wanted = sorted({f for names in head_features.values() for f in names})
    # The models that compute the features at fitting time stay with the fitted heads, which compute them again.
    extractors = PretrainedExtractors()
    features = model_clip_features(model, clips, wanted, batch_size=batch_size, progress=progress,
                                   extractors=extractors)
    model.attribute_heads = fit_heads(schema, head_features, features, labels, extractors=extractors)
    return model.attribute_heads
