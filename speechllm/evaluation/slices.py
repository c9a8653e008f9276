"""Who the model fails: the evaluation's scores per group of clips, by the reference's gender and accent and by
dataset, and the progress of a long evaluation."""

from __future__ import annotations

import sys
import time
from typing import Callable, Sequence

SLICE_FIELDS = ("Gender", "Accent")  # reference labels that split the clips, when the manifests give them


def slice_groups(predictions: Sequence[dict]) -> dict[str, dict[str, list[dict]]]:
    """{"Gender": {"Female": [rows], ...}, "Accent": {...}, "dataset": {...}}: the rows by the reference's label of
    each slice field (rows without one are in no group of it) and by dataset. A slice with fewer than two groups
    says nothing about who fails and is left out."""
    out = {}
    for name in SLICE_FIELDS:
        groups: dict[str, list[dict]] = {}
        for p in predictions:
            value = p.get("reference", {}).get(name)
            if value is not None:
                groups.setdefault(str(value), []).append(p)
        if len(groups) > 1:
            out[name] = dict(sorted(groups.items()))
    datasets: dict[str, list[dict]] = {}
    for p in predictions:
        datasets.setdefault(p["dataset"], []).append(p)
    if len(datasets) > 1:
        out["dataset"] = datasets
    return out


def slice_report(predictions: Sequence[dict], summarize: Callable[[list[dict]], dict]) -> dict:
    """{slice: {group: summary}}, each summary as `summarize` gives it for the group's rows."""
    return {name: {group: summarize(rows) for group, rows in groups.items()}
            for name, groups in slice_groups(predictions).items()}


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressLine:
    """Lines like "eval: 120/379 clips, 2m10s elapsed, about 4m34s left" on a stream (stderr), at most one per
    `every` seconds and one at the end: a long evaluation run without a terminal (a log, CI) shows it is alive."""

    def __init__(self, total: int, *, every: float = 30.0, stream=None, label: str = "eval",
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.every, self.label, self.clock = total, every, label, clock
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.start = 0, clock()
        self.last = self.start

    def update(self, clips: int) -> None:
        self.done += clips
        now = self.clock()
        if now - self.last < self.every and self.done < self.total:
            return
        self.last, elapsed = now, now - self.start
        line = f"{self.label}: {self.done}/{self.total} clips, {_clock(elapsed)} elapsed"
        if self.done < self.total:
            line += f", about {_clock(elapsed / max(self.done, 1) * (self.total - self.done))} left"
        print(line, file=self.stream, flush=True)
