"""Evaluation manifests: tolerant reading, raw-label mapping, grouping by dataset.

Training manifests are strict (`data.manifest.read_manifest`: an unknown key or label stops the run). Evaluation
sets are often someone else's files with documentation columns (`speaker`, `source`, `notes`) and their sources'
label spellings, so here:
- keys that are not manifest keys are ignored, except `dataset`, which names the row's group in the report;
- labels go through `labels.map_label`; a label with no counterpart is left out of scoring and counted;
- a row that still cannot be used (bad JSON, missing audio file, nothing to score) is reported with its file and
  line, and the others are evaluated.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from speechllm.data.manifest import Record, RowParser, label_keys
from speechllm.metadata import MetadataSchema
from speechllm.records import BadRow, JsonLine, read_jsonl

from .labels import map_label

# Only these keys reach the strict row parser; instruction/conversation rows are not scored here.
_SCORED_KEYS = ("id", "audio", "offset_s", "duration_s", "transcript")


@dataclass
class EvalData:
    """Records grouped by dataset (in the order first seen), rows that could not be used per manifest, and the
    raw labels left out because they have no counterpart in the schema (field -> raw value -> count)."""

    groups: dict[str, list[Record]] = field(default_factory=dict)
    skipped: dict[str, list[dict]] = field(default_factory=dict)
    unmapped: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    @property
    def records(self) -> list[Record]:
        return [r for records in self.groups.values() for r in records]


def dataset_name(path: Path) -> str:
    """A manifest's default group name: its stem, or its folder's name when the stem says nothing."""
    return path.parent.name if path.stem in ("manifest", "data", "test", "dev") else path.stem


def read_eval_manifests(paths, schema: MetadataSchema, limit: int | None = None) -> EvalData:
    """Read evaluation manifests (JSONL, the training format plus any extra keys) -> EvalData.

    `limit` keeps the first N usable rows of each manifest. Raises DataError only when a manifest file is
    missing; bad rows are listed in `EvalData.skipped[path]` as {"line", "reason"}."""
    data = EvalData()
    for path in [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]:
        lines = read_jsonl(path)  # DataError when the file is missing
        parser = RowParser(schema, path.parent, check_audio=True, task=None)
        skipped, kept = data.skipped.setdefault(str(path), []), 0
        for line in lines:
            if limit is not None and kept >= limit:
                break
            try:
                group, record = _parse(line, parser, schema, data.unmapped)
            except BadRow as e:
                skipped.append({"line": line.number, "reason": e.reason})
                continue
            data.groups.setdefault(group, []).append(record)
            kept += 1
    return data


def _parse(line: JsonLine, parser: RowParser, schema: MetadataSchema, unmapped):
    row, path = line.row(), line.path
    group = row.get("dataset") if isinstance(row.get("dataset"), str) and row["dataset"].strip() else None
    kept = {k: row[k] for k in _SCORED_KEYS if row.get(k) is not None}
    for key, name in label_keys(schema).items():
        raw = row.get(key)
        if raw is None or schema.field(name).kind == "text":
            continue
        value = map_label(name, raw, schema)
        if value is None:
            unmapped[name][str(raw)] += 1
        else:
            kept[key] = value
    return group or dataset_name(path), parser.parse(kept, f"{path.stem}:{line.number}", line.where)
