"""Records from Hugging Face datasets on local disk, validated row by row like manifest rows.

    data = load_hf_dataset("data/qa.parquet", column_map={"question": "instruction", "answer": "response"})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import DataError, SpeechLLMError
from ..metadata import SPEECHLLM_SCHEMA, MetadataSchema
from ..records import BadRow
from .manifest import BASE_KEYS, ManifestData, OnBadRow, Record, RowParser, label_keys


@dataclass
class RecordStream:
    """Records of a dataset, validated as they come; `skipped` fills as bad rows go by (afresh each pass)."""

    rows: Any  # a datasets Dataset or IterableDataset
    rename: Callable[[dict], dict]
    parser: RowParser
    name: str
    on_bad_row: OnBadRow
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Record]:
        self.skipped.clear()
        self.parser.seen_ids.clear()
        for index, row in enumerate(self.rows):
            where = f"{self.name}[{index}]"
            try:
                yield self.parser.parse(self.rename(row), f"{Path(self.name).stem}:{index}", where)
            except BadRow as e:
                if self.on_bad_row == "error":
                    raise DataError(f"{e.at(where)} (on_bad_row='skip' leaves bad rows out)") from None
                self.skipped.append((index, e.reason))


def load_hf_dataset(
    path_or_dir: str | Path,
    split: str | None = None,
    streaming: bool = False,
    column_map: dict[str, str] | None = None,
    *,
    schema: MetadataSchema | None = None,
    on_bad_row: OnBadRow = "error",
    check_audio: bool = True,
    task: str | None = None,
) -> ManifestData | RecordStream:
    """Records from a Hugging Face dataset on local disk: a json/jsonl/csv/parquet file, a folder of them, or a
    folder written by `save_to_disk`.

    `column_map` renames dataset columns to manifest keys ({"sentence": "transcript", "path": "audio"});
    columns that are not manifest keys after renaming are ignored. The audio column holds paths (relative to
    the data's folder) or `Audio` values, read undecoded ({"path", "bytes"}) and decoded later by
    `speechllm.audio.load_audio`. Rows are validated like manifest rows; `skipped` holds (0-based row, reason).
    Returns ManifestData, or with `streaming=True` a RecordStream that reads rows lazily.
    """
    import datasets

    path = Path(path_or_dir)
    if not path.exists():
        raise DataError(f"dataset {path} not found")
    try:
        if path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                data = _pick_split(data, split, path)
            if streaming:
                data = data.to_iterable_dataset()
        else:
            files = str(path) if path.is_dir() else None
            builder = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix)
            if path.is_file() and builder is None:
                raise DataError(f"{path}: unknown data file type; use .json, .jsonl, .csv or .parquet")
            data = (datasets.load_dataset(files, split=split, streaming=streaming) if files else
                    datasets.load_dataset(builder, data_files=str(path), split=split or "train", streaming=streaming))
            if isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
                data = _pick_split(data, split, path)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetGenerationError) as e:
        if isinstance(e, SpeechLLMError):
            raise
        raise DataError(f"{path}: cannot load as a dataset ({e})") from None
    schema = schema or SPEECHLLM_SCHEMA
    data = _undecoded(data)
    parser = RowParser(schema, path if path.is_dir() else path.parent, check_audio, task)
    rename = _renamer(data, column_map or {}, set(BASE_KEYS) | set(label_keys(schema)), path)
    stream = RecordStream(data, rename, parser, str(path), on_bad_row)
    if streaming:
        return stream
    return ManifestData(str(path), list(stream), stream.skipped)


def _pick_split(data, split: str | None, path: Path):
    if split is None and len(data) == 1:
        return next(iter(data.values()))
    if split not in data:
        raise DataError(f"{path}: choose a split with split=...; it has {sorted(data)}")
    return data[split]


def _undecoded(data):
    """The dataset with Audio columns left undecoded ({"path", "bytes"}): datasets' decoding needs torchcodec."""
    import datasets

    for name, feature in (data.features or {}).items():
        if isinstance(feature, datasets.Audio) and feature.decode:
            data = data.cast_column(name, datasets.Audio(decode=False))
    return data


def _renamer(data, column_map: dict[str, str], keys: set[str], path: Path) -> Callable[[dict], dict]:
    """Rows with columns renamed by `column_map`, keeping only manifest keys (corpora carry many other columns)."""
    columns = data.column_names
    if columns is not None:  # unknown for some streamed sources until rows arrive
        missing = sorted(set(column_map) - set(columns))
        if missing:
            raise DataError(f"{path}: column_map names column(s) {missing} that the dataset lacks; it has {columns}")
        if "audio" not in {column_map.get(c, c) for c in columns}:
            raise DataError(f"{path}: no 'audio' column; map one with column_map={{'<column>': 'audio'}}; "
                            f"it has {columns}")
    return lambda row: {column_map.get(k, k): v for k, v in row.items() if column_map.get(k, k) in keys}
