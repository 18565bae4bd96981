"""run_dir/stats.json: per-stage counts in and out, reasons for every set-aside row, seconds."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from factory.storage import RunDir

STATS_FILE = "stats.json"


def record(run: RunDir, stage: str, entry: dict) -> None:
    """Replace one stage's entry; the file is rewritten whole (it is small) after each stage."""
    stats = run.read_json(STATS_FILE, default={})
    stats[stage] = entry
    run.write_json(STATS_FILE, stats)


@contextmanager
def timed(run: RunDir, stage: str) -> Iterator[dict]:
    """Collect a stage's entry; written with its wall seconds when the stage finishes without error."""
    entry: dict = {}
    start = time.perf_counter()
    yield entry
    entry["seconds"] = round(time.perf_counter() - start, 2)
    record(run, stage, entry)


def reasons(values) -> dict[str, int]:
    return dict(Counter(v for v in values if v).most_common())
