"""Mix several sources into one training stream whose item i is fixed by the seed, and batch it by length.

The recipe's `data:` section:

    data:
      sources:
        - manifest: data/train.jsonl     # or hf_dataset: path (json/csv/parquet file, folder, save_to_disk)
          task: metadata                 # default for rows that pin none; absent: inferred from each row
          weight: 3
          options: {subset_prob: 0.2}    # keyword options of the task
          on_bad_row: skip               # "error" (default) or "skip"; skipped rows are reported
        - hf_dataset: data/qa.parquet
          column_map: {question: instruction, answer: response}
          task: instruction

`MixedDataset` draws, for a seed, which source and which record each of `num_samples` items is (records are
visited in a fresh random order each pass over a source), so item i never changes: resuming is starting at
an index. Nothing is decoded until `__getitem__`, and then only by the processor.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch

from ..config import from_dict
from ..errors import ConfigError, DataError
from ..metadata import SPEECHLLM_SCHEMA, MetadataSchema
from ..prompt_styles import PromptStyle
from ..records import BadRow, header_seconds
from .hf_datasets import load_hf_dataset
from .manifest import Record, audio_seconds, read_manifest
from .tasks import TASKS, TrainingExample, build_example, checked_task, task_for


@dataclass
class SourceConfig:
    """One source of a recipe's `data:` section: a manifest or a local Hugging Face dataset."""

    manifest: str | None = None
    hf_dataset: str | None = None
    split: str | None = None  # hf_dataset only
    column_map: dict[str, str] | None = None  # hf_dataset only: dataset column -> manifest key
    task: str | None = None
    weight: float = 1.0
    options: dict = field(default_factory=dict)
    on_bad_row: Literal["error", "skip"] = "error"
    check_audio: bool = True
    ignore_keys: list[str] = field(default_factory=list)  # manifest only: keys accepted and dropped
    name: str | None = None  # in reports; default: the path

    def __post_init__(self):
        where = f"data source {self.name or self.manifest or self.hf_dataset}"
        if (self.manifest is None) == (self.hf_dataset is None):
            raise ConfigError(f"{where}: give exactly one of 'manifest' and 'hf_dataset'")
        if self.manifest is not None and (self.split or self.column_map):
            raise ConfigError(f"{where}: 'split' and 'column_map' are for hf_dataset sources")
        if self.hf_dataset is not None and self.ignore_keys:
            raise ConfigError(f"{where}: 'ignore_keys' is for manifests (datasets ignore unmapped columns)")
        if not self.weight > 0:
            raise ConfigError(f"{where}: weight must be > 0, got {self.weight}")
        if self.task is not None and self.task not in TASKS:
            raise ConfigError(f"{where}: unknown task {self.task!r}; registered tasks are {sorted(TASKS)}")
        self.name = self.name or self.manifest or self.hf_dataset

    def load(self, schema: MetadataSchema) -> Source:
        """Read and validate every row (bad rows raise or are skipped, per `on_bad_row`)."""
        if self.manifest is not None:
            data = read_manifest(self.manifest, schema, on_bad_row=self.on_bad_row, check_audio=self.check_audio,
                                 task=self.task, ignore_keys=self.ignore_keys)
        else:
            data = load_hf_dataset(self.hf_dataset, self.split, column_map=self.column_map, schema=schema,
                                   on_bad_row=self.on_bad_row, check_audio=self.check_audio, task=self.task)
        return Source(data.records, self.task, self.weight, dict(self.options), self.name, data.skipped)


@dataclass
class DataConfig:
    """A recipe's `data:` section: the sources to mix."""

    sources: list[SourceConfig] = field(default_factory=list)

    def __post_init__(self):
        self.sources = [from_dict(SourceConfig, s, f"data.sources[{i}]") for i, s in enumerate(self.sources)]
        if not self.sources:
            raise ConfigError("data: needs at least one entry under 'sources'")

    @classmethod
    def from_dict(cls, data: dict | DataConfig) -> DataConfig:
        return from_dict(cls, data, "data")


@dataclass
class Source:
    """Records with the task for rows that pin none, a mixing weight and task options."""

    records: Sequence[Record]
    task: str | None = None
    weight: float = 1.0
    options: dict = field(default_factory=dict)
    name: str = "source"
    skipped: list[tuple[int, str]] = field(default_factory=list)


class MixedDataset(torch.utils.data.Dataset):
    """A map-style dataset of `num_samples` TrainingExamples drawn from weighted sources.

    `sources` is a DataConfig (read here) or a list of Source / (records, task, weight) tuples. `schema` is a
    MetadataSchema, a schema config dict, or None for SpeechLLM's; `style` a prompt style that words the examples
    (see `tasks.build_example`). `num_samples` defaults to the total number
    of records. `skipped` lists (source name, line or row, reason) of every row left out.
    """

    def __init__(self, sources, num_samples: int | None = None, seed: int = 0,
                 schema: MetadataSchema | dict | list | None = None, style: PromptStyle | None = None):
        self.schema = SPEECHLLM_SCHEMA if schema is None else MetadataSchema.from_config(schema)
        self.style = style
        if isinstance(sources, DataConfig):
            sources = [config.load(self.schema) for config in sources.sources]
        self.sources = [s if isinstance(s, Source) else Source(*s) for s in sources]
        for source in self.sources:
            self._check(source)
        self.skipped = [(s.name, line, reason) for s in self.sources for line, reason in s.skipped]
        self.seed = seed
        self.num_samples = sum(len(s.records) for s in self.sources) if num_samples is None else num_samples
        self._source, self._record = self._schedule()

    def _check(self, source: Source) -> None:
        if not source.records:
            raise DataError(f"data source {source.name}: no usable rows ({len(source.skipped)} skipped)")
        if not source.weight > 0:
            raise ConfigError(f"data source {source.name}: weight must be > 0, got {source.weight}")
        tasks = set()
        for record in source.records:  # records read from a manifest were checked there: this finds them fit
            try:
                tasks.add(checked_task(record, source.task, self.schema))
            except DataError as e:
                raise DataError(f"{record.origin}: {e}") from None
        # An option must mean something to some task of the source; each task gets the ones it takes.
        known = set().union(*(TASKS[t].options for t in tasks))
        unknown = sorted(set(source.options) - known)
        if unknown:
            raise ConfigError(f"data source {source.name}: option(s) {unknown} are not options of its task(s) "
                              f"{sorted(tasks)}, which take {sorted(known)}")

    def _schedule(self) -> tuple[np.ndarray, np.ndarray]:
        """Source and record index of every item: sources drawn by weight, records in per-pass shuffles."""
        rng = np.random.default_rng(self.seed)
        weights = np.array([s.weight for s in self.sources], dtype=float)
        which = rng.choice(len(self.sources), size=self.num_samples, p=weights / weights.sum())
        record = np.zeros(self.num_samples, dtype=np.int64)
        for index, source in enumerate(self.sources):
            slots = np.flatnonzero(which == index)
            count = len(source.records)
            passes = -(-len(slots) // count)
            order = np.concatenate([rng.permutation(count) for _ in range(passes)]) if passes else []
            record[slots] = order[: len(slots)]
        return which, record

    def __len__(self) -> int:
        return self.num_samples

    def record(self, index: int) -> tuple[Source, Record]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        source = self.sources[self._source[index]]
        return source, source.records[self._record[index]]

    def __getitem__(self, index: int) -> TrainingExample:
        source, record = self.record(index)
        rng = random.Random(f"{self.seed}:{index}")  # per item: the same example whatever was read before
        name = task_for(record, source.task)
        options = {k: v for k, v in source.options.items() if k in TASKS[name].options}
        return build_example(record, name, rng, self.schema, self.style, **options)

    def durations(self) -> list[float]:
        """Seconds of audio of every item (manifest durations, else header reads), for length_buckets."""
        seconds: dict[tuple[int, int], float] = {}
        out = []
        for s, r in zip(self._source.tolist(), self._record.tolist()):
            if (s, r) not in seconds:
                seconds[s, r] = record_seconds(self.sources[s].records[r])
            out.append(seconds[s, r])
        return out


def record_seconds(record: Record) -> float:
    """All the audio a record's example holds: its clip plus any other clips its conversation names."""
    total = audio_seconds(record) if record.audio is not None else 0.0
    for message in record.conversation or []:
        for part in message["content"] if isinstance(message["content"], list) else []:
            if part["type"] == "audio" and "audio" in part:
                try:
                    total += header_seconds(part["audio"])
                except BadRow as e:
                    raise DataError(f"{record.origin}: {e}") from None
    return total


def length_buckets(lengths: Sequence[float], batch_size: int, seed: int, *, pool_batches: int = 50) -> list[list[int]]:
    """Batches of indices into `lengths` whose items have similar lengths, in random order; same seed, same batches.

    Indices are shuffled, cut into pools of `pool_batches * batch_size`, sorted by length within each pool and
    cut into batches (so batches differ between seeds yet pad little); then the batches are shuffled. Every
    index appears once; at most one batch per pool is short.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=float)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    pool = batch_size * max(pool_batches, 1)
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def describe_skipped(dataset: MixedDataset, limit: int = 20) -> str:
    """A report of the rows left out with on_bad_row="skip": how many, and which (first `limit`)."""
    if not dataset.skipped:
        return "no rows skipped"
    lines = [f"{len(dataset.skipped)} bad row(s) skipped:"]
    lines += [f"  {name}:{line}: {reason}" for name, line, reason in dataset.skipped[:limit]]
    if len(dataset.skipped) > limit:
        lines.append(f"  ... and {len(dataset.skipped) - limit} more")
    return "\n".join(lines)
