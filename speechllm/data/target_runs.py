"""The files of a self-generated targets run (`targets.generate_targets`): shard paths and merging, the
`<out>.meta.json` beside each output, and resuming a cut-off run where it stopped."""

from __future__ import annotations

import heapq
import json
import os
from pathlib import Path

from ..errors import ConfigError, DataError


def shard_path(out_path, k: int, n: int) -> Path:
    """`out.jsonl` -> `out.shard-k-of-n.jsonl` (the file shard k of n writes)."""
    out_path = Path(out_path)
    stem = out_path.with_suffix("") if out_path.suffix == ".jsonl" else out_path
    return stem.with_name(f"{stem.name}.shard-{k}-of-{n}.jsonl")


def merge_shards(out_path, n: int) -> int:
    """Merge the n finished shard files of `out_path` into `out_path` in source order; returns the row count.

    Each shard is sorted by `source_line` and all samples of one manifest row sit in one shard, so a stable
    merge on `source_line` gives exactly the lines of an unsharded run.
    """
    paths = [shard_path(out_path, k, n) for k in range(n)]
    for k, path in enumerate(paths):
        if not path.exists() or not read_meta(path).get("finished"):
            raise DataError(f"{path} is missing or unfinished; run shard=({k}, {n}) to the end first")
    files = [open(path, "rb") for path in paths]
    try:
        lines = heapq.merge(*files, key=lambda line: json.loads(line)["source_line"])
        with open(out_path, "wb") as out:
            rows = 0
            for line in lines:
                out.write(line)
                rows += 1
    finally:
        for f in files:
            f.close()
    return rows


def count_done(samples: list, last: tuple | None) -> int:
    """How many of this batch's samples (each with `source_line` and `key`) a previous run already handled (it
    wrote `last` last)."""
    if last is None or not samples or samples[0].source_line > last[0]:
        return 0
    if samples[-1].source_line < last[0]:
        return len(samples)
    for number, sample in enumerate(samples):
        if sample.key == last:
            return number + 1
    raise DataError(f"the output's last row {last} does not belong to this run; pass resume=False to restart")


def recover_output(path: Path) -> tuple | None:
    """Truncate a cut-off last line; return the key (source_line, family, instruction) of the last full row."""
    if not path.exists():
        return None
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
    if keep == 0:
        return None
    try:
        row = json.loads(data[data.rfind(b"\n", 0, keep - 1) + 1: keep])
        return row["source_line"], row["family"], row["instruction"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"{path}: the last line was not written by generate_targets; pass resume=False") from None


def auto_shard(shard, device):
    if shard is not None:
        k, n = shard
        if not 0 <= k < n:
            raise ConfigError(f"shard must be (k, n) with 0 <= k < n, got {shard!r}")
        return (k, n), device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState()
        return (state.process_index, state.num_processes), state.device if device == "auto" else device
    return (0, 1), device


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def read_meta(path: Path) -> dict:
    meta = meta_path(Path(path))
    return json.loads(meta.read_text(encoding="utf-8")) if meta.exists() else {}


def write_meta(path: Path, meta: dict) -> None:
    target = meta_path(path)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(temporary, target)
