"""The examples a run trains and evaluates on: one dataset per stage and one eval set per run.

Each source's manifest (or Hugging Face dataset) is read and checked once per run: stages that train on the same
sources draw their examples from the records read for the first of them. Reading can be slow (every clip's
header is checked), and a recipe's stages usually share their data.
"""

from __future__ import annotations

import dataclasses
import json

from ..data.mixing import DataConfig, MixedDataset, Source, length_buckets
from ..metadata import MetadataSchema
from ..prompt_styles import resolve_prompt_style
from .config import StageConfig, TrainConfig

EVAL_SEED_OFFSET = 10_000  # the eval set's draw never coincides with a stage's (stage i draws with seed + i)


def eval_batch_size(config: TrainConfig) -> int:
    """Clips per evaluation batch: the largest stage batch size, so every stage is scored on the same examples."""
    return max(stage.batch_size for stage in config.stages)


class RunDatasets:
    """Builds the datasets of one run, reading each distinct source once."""

    def __init__(self, config: TrainConfig, schema: MetadataSchema):
        self.config, self.schema = config, schema
        # The model's prompt style words its examples, as evaluation words its requests.
        self.style = resolve_prompt_style(config.model.prompt_style) if config.model.prompt_style else None
        self._read: dict[str, Source] = {}

    def sources(self, data: dict) -> list[Source]:
        """The records of a `data:` section's sources, read on first use."""
        sources = []
        for source in DataConfig.from_dict(data).sources:
            key = json.dumps(dataclasses.asdict(source), sort_keys=True, default=str)
            if key not in self._read:
                self._read[key] = source.load(self.schema)
            sources.append(self._read[key])
        return sources

    def for_stage(self, index: int, stage: StageConfig, world: int) -> MixedDataset:
        """Stage `index`'s examples: exactly as many as its steps consume over `world` processes."""
        data = stage.data if stage.data is not None else self.config.data
        size = stage.steps * stage.batch_size * stage.grad_accum * world
        return MixedDataset(self.sources(data), num_samples=size, seed=self.config.seed + index, schema=self.schema,
                            style=self.style)

    def for_evaluation(self) -> MixedDataset | None:
        """The held-out examples every evaluation of the run scores (`eval_batches` batches), or None."""
        if self.config.eval_data is None:
            return None
        size = self.config.eval_batches * eval_batch_size(self.config)
        return MixedDataset(self.sources(self.config.eval_data), num_samples=size,
                            seed=self.config.seed + EVAL_SEED_OFFSET, schema=self.schema, style=self.style)


def step_plan(dataset: MixedDataset, stage: StageConfig, seed: int, rank: int, world: int) -> list[list[list[int]]]:
    """For every optimiser step, this process's micro-batches of dataset indices.

    Global batches group clips of similar duration (less padding); their rows are dealt to processes in turn,
    so every process gets a share of each global batch.
    """
    buckets = length_buckets(dataset.durations(), stage.batch_size * world, seed=seed)
    steps = []
    for start in range(0, stage.steps * stage.grad_accum, stage.grad_accum):
        micro = [buckets[(start + k) % len(buckets)] for k in range(stage.grad_accum)]
        steps.append([m[rank::world] for m in micro])
    return steps
