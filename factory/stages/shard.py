"""Shard: kept traces -> SFT rows in Hugging Face layout, with a dataset card, plots and stats.

run_dir/dataset/data/{split}-{i:05d}-of-{n:05d}.parquet, README.md, plots/*.png, stats.json.
A problem's split comes from a hash of its problem_id, so no problem sits in two splits and adding
problems never moves the old ones. Rows are ordered by (problem_id, sample_idx, trace_key) and files
are cut at row-group boundaries, so the same input gives byte-identical files.

The rows never sit in memory all at once (600K R1 traces are about 15 GB): an external sort. One pass
turns input batches into SFT rows and routes them into problem_id-range buckets (temporary Arrow files
on local disk); a second sorts one bucket at a time and appends it to the split writers. Row groups are
sized from byte counts gathered in the first pass, so no bucket boundary shows in the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory import stats
from factory.config import PipelineConfig, ShardConfig, TeacherConfig
from factory.records import MESSAGE_TYPE, SFT_SCHEMA, TRACE_SCHEMA
from factory.storage import RunDir
from factory.teacher.prompts import chat_messages, source_teachers

STAGE = "dataset"
MIB = 1 << 20
# Row order; `_sample_idx` is sample_idx as the sort buckets carry it (SFT rows have no such column).
ORDER = [("problem_id", "ascending"), ("_sample_idx", "ascending"), ("trace_key", "ascending")]
SFT_BATCH = 4096  # input rows turned into SFT rows at a time
BUCKET_BYTES = 128 * MIB  # input bytes per sort bucket: the second pass holds a bucket and its sorted copy
# What shard reads of verify/ or curate/: not the reasoning/response split, the prompt or the verdicts,
# which at R1 lengths are about half the bytes of a stage.
INPUT_COLUMNS = ["problem_id", "sample_idx", "trace_key", "accepted", "source", "domain", "answer", "teacher",
                 "sampling", "problem", "completion", "prompt_tokens", "completion_tokens", "pass_rate"]
PROBLEM_COLUMNS = ["problem_id", "accepted", "pass_rate"]  # read whole: a few dozen bytes a row


@dataclass
class ShardInput:
    """Shard's input without holding it: the short per-row columns at once, the rows in batches."""

    problems: pa.Table  # problem_id, accepted (and curate's pass_rate) of every input row
    batches: Callable[[], Iterator[pa.Table]]
    row_bytes: float  # average uncompressed bytes of an input row: sizes the sort buckets

    @classmethod
    def of_table(cls, rows: pa.Table) -> ShardInput:
        def batches() -> Iterator[pa.Table]:
            for i in range(0, rows.num_rows, SFT_BATCH):
                yield rows.slice(i, SFT_BATCH)

        problems = rows.select([c for c in PROBLEM_COLUMNS if c in rows.column_names])
        return cls(problems, batches, rows.nbytes / max(rows.num_rows, 1))

    @classmethod
    def of_stage(cls, run: RunDir, stage: str) -> ShardInput:
        """The part files of verify/ or curate/ (pass_rate exists only in curate/)."""
        parts = run.parts(stage)
        if not parts:
            run.read_stage(stage)  # raises, naming the missing folder
        metas = [pq.read_metadata(p, filesystem=run.fs) for p in parts]
        columns = [[c for c in INPUT_COLUMNS if c in m.schema.names] for m in metas]

        def batches() -> Iterator[pa.Table]:
            for path, cols in zip(parts, columns):
                with run.fs.open(path, "rb") as f:
                    for batch in pq.ParquetFile(f).iter_batches(batch_size=SFT_BATCH, columns=cols):
                        yield pa.Table.from_batches([batch])

        problems = run.read_stage(stage, columns=[c for c in PROBLEM_COLUMNS if c in columns[0]])
        stored = sum(group.column(j).total_uncompressed_size
                     for m, cols in zip(metas, columns) for group in map(m.row_group, range(m.num_row_groups))
                     for j in range(group.num_columns) if group.column(j).path_in_schema in cols)
        return cls(problems, batches, stored / max(problems.num_rows, 1))


def verifier_versions() -> str:
    import math_verify

    import verifiers

    return json.dumps(
        {"verifiers": getattr(verifiers, "__version__", "0"), "math_verify": getattr(math_verify, "__version__", "?")},
        sort_keys=True,
    )


def prompt_messages(cfg: PipelineConfig, teacher: TeacherConfig, problem: str) -> list[dict]:
    """The messages before the assistant turn: the prompt the trace was made with, plus shard.system_prompt."""
    messages = chat_messages(teacher, problem)
    if cfg.shard.system_prompt and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": cfg.shard.system_prompt})
    return messages


def sft_batch(batch: pa.Table, cfg: PipelineConfig, versions: str) -> pa.Table:
    """SFT rows for a batch of traces, built column by column: only the short prompt messages pass
    through Python; the completions (tens of KB each in R1-style traces) stay in Arrow buffers."""
    n = batch.num_rows

    def col(name: str) -> pa.Array:
        field = SFT_SCHEMA.field(name) if name in SFT_SCHEMA.names else TRACE_SCHEMA.field(name)
        if name not in batch.column_names:
            return pa.nulls(n, field.type)
        return batch.column(name).combine_chunks().cast(field.type)

    teachers = source_teachers(cfg)  # a source's own prompt template and mode, if it sets them
    prompt_contents, roles, index, offsets = [], [], [], [0]
    sources = col("source").to_pylist()
    for i, problem in enumerate(batch.column("problem").to_pylist()):
        for m in prompt_messages(cfg, teachers.get(sources[i], cfg.teacher), problem):
            index.append(len(prompt_contents))
            prompt_contents.append(m["content"])
            roles.append(m["role"])
        index.append(-1 - i)  # the i-th completion: its place is known once all prompts are counted
        roles.append("assistant")
        offsets.append(len(roles))
    index = [j if j >= 0 else len(prompt_contents) - 1 - j for j in index]
    contents = pa.concat_arrays([pa.array(prompt_contents, pa.string()), col("completion")]).take(pa.array(index))
    turns = pa.StructArray.from_arrays([pa.array(roles, pa.string()), contents], fields=list(MESSAGE_TYPE))
    messages = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), turns)
    tokens = pc.add(pc.fill_null(col("prompt_tokens"), 0), pc.fill_null(col("completion_tokens"), 0))
    columns = {
        "messages": messages,
        "num_tokens": pc.if_else(pc.equal(tokens, 0), pa.scalar(None, pa.int32()), tokens),  # no counts: null
        "verifiers": pa.array([versions] * n, pa.string()),
    }
    arrays = [columns[f.name] if f.name in columns else col(f.name) for f in SFT_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SFT_SCHEMA)


def split_of(problem_id: str, splits: dict[str, float]) -> str:
    """The split a problem belongs to: its hash as a point in [0, 1) against the cumulative shares."""
    point = int.from_bytes(hashlib.sha256(problem_id.encode("utf-8")).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, share in splits.items():
        edge += share
        if point < edge:
            return name
    return name  # shares sum to 1 up to rounding: the last split takes what is left


def value_bytes(arr: pa.Array | pa.ChunkedArray) -> int:
    """Uncompressed bytes of an array's values and offsets. Unlike Arrow's `nbytes` this adds up over any
    division of the rows (no per-chunk validity bitmaps or closing offsets), so sizes summed batch by
    batch do not depend on the input's order."""
    if isinstance(arr, pa.ChunkedArray):
        return sum(value_bytes(chunk) for chunk in arr.chunks)
    kind = arr.type
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        return 4 * len(arr) + (pc.sum(pc.binary_length(arr)).as_py() or 0)
    if pa.types.is_list(kind):
        return 4 * len(arr) + value_bytes(arr.flatten())
    if pa.types.is_struct(kind):
        return sum(value_bytes(child) for child in arr.flatten())
    return (len(arr) * kind.bit_width + 7) // 8


def rows_per_group(num_bytes: int, rows: int, shard: ShardConfig) -> int:
    """Rows per Parquet row group so that one group is about `row_group_mb` uncompressed."""
    avg_row = num_bytes / max(rows, 1)
    return max(1, min(shard.max_rows_per_shard, int(shard.row_group_mb * MIB // max(avg_row, 1))))


class SplitWriter:
    """One split's shards, from rows appended in order: row groups of a fixed row count, a new file once
    one reaches `target_shard_mb` on disk or `max_rows_per_shard` rows.

    The file count is known only at the end, so shards are written under temporary names and renamed
    to `{split}-{i:05d}-of-{n:05d}.parquet` by `close`.
    """

    def __init__(self, run: RunDir, split: str, group: int, shard: ShardConfig):
        self.run, self.split, self.group, self.shard = run, split, group, shard
        self.data_dir = run.makedirs(STAGE, "data")
        self.pending = SFT_SCHEMA.empty_table()
        self.written: list[tuple[str, int]] = []  # (temporary path, rows)
        self.file = self.writer = None

    def append(self, rows: pa.Table) -> None:
        self.pending = pa.concat_tables([self.pending, rows])
        while self.pending.num_rows >= self._next_group():
            self._write(self._next_group())
        # A copy of the rest (less than a row group), so the appended table's buffers can go.
        self.pending = self.pending.take(pa.array(range(self.pending.num_rows), pa.int64()))

    def _next_group(self) -> int:
        in_file = self.written[-1][1] if self.writer else 0
        return min(self.group, self.shard.max_rows_per_shard - in_file)

    def _write(self, n: int) -> None:
        if self.writer is None:
            tmp = posixpath.join(self.data_dir, f".{self.split}-{len(self.written):05d}.tmp")
            self.file = self.run.fs.open(tmp, "wb")
            self.writer = pq.ParquetWriter(self.file, SFT_SCHEMA, compression="zstd")
            self.written.append((tmp, 0))
        # One contiguous group: the bytes written do not depend on how the rows arrived.
        self.writer.write_table(self.pending.slice(0, n).combine_chunks(), row_group_size=max(n, 1))
        self.pending = self.pending.slice(n)
        tmp, rows = self.written[-1]
        self.written[-1] = (tmp, rows + n)
        if rows + n >= self.shard.max_rows_per_shard or self.file.tell() >= self.shard.target_shard_mb * MIB:
            self._close_file()

    def _close_file(self) -> None:
        self.writer.close()
        self.file.close()
        self.file = self.writer = None

    def close(self) -> list[dict]:
        while self.pending.num_rows:
            self._write(min(self._next_group(), self.pending.num_rows))
        if not self.written:  # an empty dataset still gets one (empty) file with the schema
            self._write(0)
        if self.writer is not None:
            self._close_file()
        files = []
        for i, (tmp, rows) in enumerate(self.written):
            path = posixpath.join(self.data_dir, f"{self.split}-{i:05d}-of-{len(self.written):05d}.parquet")
            self.run.fs.mv(tmp, path)
            files.append({"path": f"data/{posixpath.basename(path)}", "rows": rows, "bytes": self.run.fs.size(path)})
        return files


@dataclass
class Summary:
    """What the card and plots need of the SFT rows, gathered as they stream past."""

    lengths: list[pa.Table] = field(default_factory=list)  # split, domain, num_tokens, chars of each row
    rows: Counter = field(default_factory=Counter)  # per split
    num_bytes: Counter = field(default_factory=Counter)  # per split: uncompressed, as datasets reports them
    teachers: Counter = field(default_factory=Counter)
    samplings: set = field(default_factory=set)

    def add(self, sft: pa.Table, splits: pa.Array, chars: pa.Array) -> None:
        self.lengths.append(pa.table({"split": splits, "domain": sft.column("domain"),
                                      "num_tokens": sft.column("num_tokens"), "chars": chars}))
        for split in pc.unique(splits).to_pylist():
            part = sft.filter(pc.equal(splits, split))
            self.rows[split] += part.num_rows
            self.num_bytes[split] += sum(value_bytes(column) for column in part.columns)
        self.teachers.update(t for t in sft.column("teacher").to_pylist() if t)
        self.samplings.update(s for s in pc.unique(sft.column("sampling")).to_pylist() if s)

    def length_table(self) -> pa.Table:
        schema = pa.schema([("split", pa.string()), ("domain", pa.string()), ("num_tokens", pa.int32()),
                            ("chars", pa.int32())])
        return pa.concat_tables([schema.empty_table(), *(t.cast(schema) for t in self.lengths)])


def bucket_bounds(problems: pa.Table, rows_per_bucket: int) -> list[str]:
    """The first problem_id of each sort bucket after the first: accepted rows cut into buckets of about
    `rows_per_bucket`, never splitting a problem."""
    kept = problems.filter(pc.field("accepted")).group_by("problem_id").aggregate([("problem_id", "count")])
    kept = kept.sort_by("problem_id")
    bounds, filled = [], 0
    for pid, count in zip(kept.column("problem_id").to_pylist(), kept.column("problem_id_count").to_pylist()):
        if filled >= rows_per_bucket:
            bounds.append(pid)
            filled = 0
        filled += count
    return bounds


def route(cfg: PipelineConfig, source: ShardInput, bounds: list[str], tmp: str) -> tuple[Summary, list[str]]:
    """First pass: SFT rows of the accepted input rows, appended to the bucket file of their problem_id
    with the columns the sort needs (`_sample_idx`, `_split`). Returns the summary and the bucket files."""
    import bisect

    versions, summary = verifier_versions(), Summary()
    paths = [os.path.join(tmp, f"bucket-{i:05d}.arrow") for i in range(len(bounds) + 1)]
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    options = pa.ipc.IpcWriteOptions(compression="lz4")  # temporary: fast over small
    try:
        for batch in source.batches():
            kept = batch.filter(pc.fill_null(batch.column("accepted"), False))
            if not kept.num_rows:
                continue
            sft = sft_batch(kept, cfg, versions)
            pids = sft.column("problem_id").to_pylist()
            splits = pa.array([split_of(pid, cfg.shard.splits) for pid in pids], pa.string())
            chars = pc.fill_null(pc.utf8_length(kept.column("completion").combine_chunks().cast(pa.string())), 0)
            summary.add(sft, splits, chars)
            tagged = sft.append_column("_sample_idx", kept.column("sample_idx").cast(pa.int64()))
            tagged = tagged.append_column("_split", splits)
            buckets = pa.array([bisect.bisect_right(bounds, pid) for pid in pids], pa.int32())
            for b in pc.unique(buckets).to_pylist():
                if b not in writers:
                    writers[b] = pa.ipc.new_file(paths[b], tagged.schema, options=options)
                writers[b].write_table(tagged.filter(pc.equal(buckets, b)))
    finally:
        for writer in writers.values():
            writer.close()
    return summary, [paths[b] for b in sorted(writers)]


def drain(path: str, writers: dict[str, SplitWriter], problems: Counter) -> None:
    """Second pass, one bucket: sorted in memory, its rows appended to their split's writer."""
    with pa.OSFile(path) as f:
        bucket = pa.ipc.open_file(f).read_all()
    os.remove(path)
    # One copy per split, taken in sorted order (not a sorted copy, then a filtered one).
    order = pc.sort_indices(bucket, sort_keys=ORDER)
    splits = bucket.column("_split").take(order)
    rows = bucket.select(SFT_SCHEMA.names)
    for split in pc.unique(splits).to_pylist():
        part = rows.take(order.filter(pc.equal(splits, split)))
        problems[split] += len(pc.unique(part.column("problem_id")))
        writers[split].append(part)


def problem_pass_rates(rows: pa.Table) -> pa.Array:
    """One pass rate per problem: curate's `pass_rate`, else the share of its samples verify accepted."""
    if "pass_rate" in rows.column_names:
        grouped = rows.group_by("problem_id").aggregate([("pass_rate", "max")])
        return grouped.column("pass_rate_max").drop_null().combine_chunks()
    share = rows.select(["problem_id"]).append_column("accepted", pc.cast(rows.column("accepted"), pa.float64()))
    return share.group_by("problem_id").aggregate([("accepted", "mean")]).column("accepted_mean").combine_chunks()


@contextmanager
def scratch_dir(run: RunDir) -> Iterator[str]:
    """Local scratch for the sort buckets, named after the run directory: a run killed mid-shard leaves
    its buckets behind, and the same command removes them when it starts over."""
    path = os.path.join(tempfile.gettempdir(), f"factory-shard-{hashlib.sha256(run.uri.encode()).hexdigest()[:16]}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_shard(cfg: PipelineConfig, run: RunDir, rows: pa.Table | ShardInput) -> dict:
    """Shard the accepted rows of verify's table, or of curate's (which marks every row it keeps accepted)."""
    from factory.card import render_card
    from factory.plots import write_plots

    start = time.perf_counter()
    source = rows if isinstance(rows, ShardInput) else ShardInput.of_table(rows)
    rows_per_bucket = max(1, int(BUCKET_BYTES // max(source.row_bytes, 1)))
    run.reset_stage(STAGE)
    with scratch_dir(run) as tmp:
        summary, buckets = route(cfg, source, bucket_bounds(source.problems, rows_per_bucket), tmp)
        # Splits with rows, in the configured order; an empty dataset keeps one empty first split.
        names = [s for s in cfg.shard.splits if summary.rows[s]] or [next(iter(cfg.shard.splits))]
        writers = {s: SplitWriter(run, s, rows_per_group(summary.num_bytes[s], summary.rows[s], cfg.shard), cfg.shard)
                   for s in names}
        problems = Counter()
        for path in buckets:  # second pass: buckets in problem_id order
            drain(path, writers, problems)
        splits = {s: {"rows": summary.rows[s], "problems": problems[s], "num_bytes": summary.num_bytes[s],
                      "files": writers[s].close()} for s in names}

    plots = write_plots(run, STAGE, summary.length_table(), problem_pass_rates(source.problems))
    entry = {
        "in": source.problems.num_rows,
        "out": sum(summary.rows.values()),
        "shards": sum(len(s["files"]) for s in splits.values()),
        "splits": {name: {k: v for k, v in s.items() if k != "files"} for name, s in splits.items()},
        "num_bytes": sum(s["num_bytes"] for s in splits.values()),
        "download_bytes": sum(f["bytes"] for s in splits.values() for f in s["files"]),
    }
    entry["seconds"] = round(time.perf_counter() - start, 2)
    stats.record(run, "shard", entry)
    all_stats = run.read_json(stats.STATS_FILE)
    run.write_text(f"{STAGE}/README.md", render_card(cfg, all_stats, splits, plots, summary.teachers, summary.samplings))
    run.write_json(f"{STAGE}/stats.json", all_stats)
    return entry
