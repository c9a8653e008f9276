"""The attribute heads: one logistic regression per metadata field, their predictions, and their files.

A model's heads are saved beside it as heads.json (per field: the features read, the input width, and the
calibration of its confidence when it has one: calibration.py) and heads.safetensors (per field: the
standardisation's mean and scale, the linear layer's weight and bias).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ConfigError
from ..metadata import Field, MetadataSchema
from .calibration import apply_calibration
from .encoder import EncoderFrames
from .extractors import PretrainedExtractors
from .features import clip_features

HEADS_CONFIG, HEADS_WEIGHTS = "heads.json", "heads.safetensors"


def field_values(field: Field) -> tuple:
    """The values a head chooses among, in the order of its outputs."""
    if field.choices:
        return field.choices
    raise ConfigError(f"metadata field {field.name!r} is free text; only label and bool fields can have a head")


class LinearHead(nn.Module):
    """Logistic regression over the concatenation of `features`, standardised by the training set's statistics."""

    def __init__(self, features: Sequence[str], width: int, classes: int):
        super().__init__()
        self.features = list(features)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.linear = nn.Linear(width, classes)

    def inputs(self, features: dict[str, np.ndarray]) -> torch.Tensor:
        """The standardised (clips, width) input from {feature name: (clips, k) array}."""
        x = torch.from_numpy(np.concatenate([features[n] for n in self.features], axis=1)).float()
        return (x - self.mean) / self.scale

    def forward(self, features: dict[str, np.ndarray]) -> torch.Tensor:
        """Each clip's probability of each value, (clips, classes)."""
        return self.linear(self.inputs(features)).softmax(-1)


@dataclass
class HeadPrediction:
    value: object
    confidence: float


class AttributeHeads(nn.Module):
    """One `LinearHead` per field; `predict` gives each clip's value and probability for each field.

    The heads own the pretrained models their features read (`extractors`, loaded on first use, freed with the
    heads); they are not weights of the heads and are never saved."""

    def __init__(self, schema: MetadataSchema, spec: dict[str, dict], extractors: PretrainedExtractors | None = None):
        super().__init__()
        self.schema = schema
        self.spec = {name: {"features": list(s["features"]), "width": int(s["width"]),
                            **({"calibration": dict(s["calibration"])} if s.get("calibration") else {})}
                     for name, s in spec.items()}
        self.heads = nn.ModuleDict({
            name: LinearHead(s["features"], s["width"], len(field_values(schema.field(name))))
            for name, s in self.spec.items()
        })
        self.extractors = extractors if extractors is not None else PretrainedExtractors()

    @property
    def fields(self) -> list[str]:
        return list(self.spec)

    def features_for(self, names: Sequence[str]) -> set:
        """The features the heads of `names` read."""
        return {f for n in names if n in self.spec for f in self.spec[n]["features"]}

    @torch.no_grad()
    def predict(self, clips: Sequence[np.ndarray], names: Sequence[str],
                encoder_frames: EncoderFrames | None = None) -> list[dict]:
        """Per clip, {field: HeadPrediction} for the fields of `names` that have a head; the confidence is
        calibrated where the head has a calibration."""
        names = [n for n in names if n in self.spec]
        if not names or not clips:
            return [{} for _ in clips]
        wanted = sorted(self.features_for(names))
        features = clip_features(wanted, clips, encoder_frames, self.extractors)
        out = [{} for _ in clips]
        for name in names:
            values = field_values(self.schema.field(name))
            probs = self.heads[name](features)
            confidences = apply_calibration(self.spec[name].get("calibration"), probs.max(-1).values.numpy())
            for row, p in enumerate(probs):
                out[row][name] = HeadPrediction(values[int(p.argmax())], float(confidences[row]))
        return out

    def save(self, directory) -> None:
        """Write heads.json and heads.safetensors into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / HEADS_CONFIG).write_text(json.dumps(self.spec, indent=1))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / HEADS_WEIGHTS))

    @classmethod
    def load(cls, directory, schema: MetadataSchema) -> "AttributeHeads | None":
        """The heads saved in `directory`, or None when it has none; ConfigError when their files do not load."""
        directory = Path(directory)
        if not (directory / HEADS_CONFIG).exists():
            return None
        try:
            spec = json.loads((directory / HEADS_CONFIG).read_text())
            heads = cls(schema, spec)
            heads.load_state_dict(load_file(str(directory / HEADS_WEIGHTS)))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ConfigError(f"{directory}: attribute heads do not load ({e})") from e
        return heads.eval()
