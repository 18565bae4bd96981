"""Shard: kept traces -> SFT rows in Hugging Face layout, with a dataset card, plots and stats.

run_dir/dataset/data/{split}-{i:05d}-of-{n:05d}.parquet, README.md, plots/*.png, stats.json.
A problem's split comes from a hash of its problem_id, so no problem sits in two splits and adding
problems never moves the old ones. Rows are ordered by (problem_id, sample_idx, trace_key) and files
are cut at row-group boundaries, so the same input gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time

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
ORDER = [("problem_id", "ascending"), ("sample_idx", "ascending"), ("trace_key", "ascending")]
SFT_BATCH = 4096  # rows turned into SFT rows at a time
# What shard reads of verify/ or curate/: not the reasoning/response split, the prompt or the verdicts,
# which at R1 lengths are about half the bytes of a stage.
INPUT_COLUMNS = ["problem_id", "sample_idx", "trace_key", "accepted", "source", "domain", "answer", "teacher",
                 "sampling", "problem", "completion", "prompt_tokens", "completion_tokens", "pass_rate"]


def read_input(run: RunDir, stage: str) -> pa.Table:
    """The columns shard uses, of every part file of `stage` (pass_rate exists only in curate/)."""
    parts = run.parts(stage)
    if not parts:
        return run.read_stage(stage)  # names the missing folder
    present = set(pq.read_schema(parts[0], filesystem=run.fs).names)
    return run.read_stage(stage, columns=[c for c in INPUT_COLUMNS if c in present])


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


def rows_per_group(tbl: pa.Table, shard: ShardConfig) -> int:
    """Rows per Parquet row group so that one group is about `row_group_mb` uncompressed."""
    avg_row = tbl.nbytes / max(tbl.num_rows, 1)
    return max(1, min(shard.max_rows_per_shard, int(shard.row_group_mb * MIB // max(avg_row, 1))))


def write_split(run: RunDir, split: str, tbl: pa.Table, shard: ShardConfig) -> list[dict]:
    """Write one split as shards of about `target_shard_mb` on disk (cut at row-group boundaries).

    The file count is known only at the end, so shards are written under temporary names and renamed
    to `{split}-{i:05d}-of-{n:05d}.parquet` once all are written.
    """
    data_dir = run.makedirs(STAGE, "data")
    group, target = rows_per_group(tbl, shard), shard.target_shard_mb * MIB
    written: list[tuple[str, int]] = []  # (temporary path, rows)
    start = 0
    while True:
        tmp = posixpath.join(data_dir, f".{split}-{len(written):05d}.tmp")
        rows = 0
        with run.fs.open(tmp, "wb") as f, pq.ParquetWriter(f, tbl.schema, compression="zstd") as writer:
            while start < tbl.num_rows and rows < shard.max_rows_per_shard:
                n = min(group, shard.max_rows_per_shard - rows, tbl.num_rows - start)
                writer.write_table(tbl.slice(start, n), row_group_size=n)
                start, rows = start + n, rows + n
                if f.tell() >= target:
                    break
            if rows == 0:  # an empty dataset still gets one (empty) file with the schema
                writer.write_table(tbl.schema.empty_table())
        written.append((tmp, rows))
        if start >= tbl.num_rows:
            break
    files = []
    for i, (tmp, rows) in enumerate(written):
        name = f"{split}-{i:05d}-of-{len(written):05d}.parquet"
        run.fs.mv(tmp, posixpath.join(data_dir, name))
        files.append({"path": f"data/{name}", "rows": rows, "bytes": run.fs.size(posixpath.join(data_dir, name))})
    return files


def problem_pass_rates(rows: pa.Table) -> pa.Array:
    """One pass rate per problem: curate's `pass_rate`, else the share of its samples verify accepted."""
    if "pass_rate" in rows.column_names:
        grouped = rows.group_by("problem_id").aggregate([("pass_rate", "max")])
        return grouped.column("pass_rate_max").drop_null().combine_chunks()
    share = rows.select(["problem_id"]).append_column("accepted", pc.cast(rows.column("accepted"), pa.float64()))
    return share.group_by("problem_id").aggregate([("accepted", "mean")]).column("accepted_mean").combine_chunks()


def run_shard(cfg: PipelineConfig, run: RunDir, rows: pa.Table) -> dict:
    """Shard the accepted rows of verify's table, or of curate's (which marks every row it keeps accepted)."""
    from factory.card import render_card
    from factory.plots import write_plots

    start = time.perf_counter()
    kept = rows.filter(pc.field("accepted")).sort_by(ORDER)
    versions = verifier_versions()
    # Fixed-size batches: the chunks of the result, and so the bytes written, do not depend on how the
    # input was chunked.
    batches = [sft_batch(kept.slice(i, SFT_BATCH), cfg, versions) for i in range(0, kept.num_rows, SFT_BATCH)]
    sft = pa.concat_tables([SFT_SCHEMA.empty_table(), *batches])
    names = pa.array([split_of(pid, cfg.shard.splits) for pid in sft.column("problem_id").to_pylist()], pa.string())
    run.reset_stage(STAGE)

    splits: dict[str, dict] = {}
    by_split: dict[str, pa.Table] = {}
    for split in cfg.shard.splits:
        part = sft.filter(pc.equal(names, split))
        if part.num_rows == 0 and (sft.num_rows or splits):
            continue  # no empty splits in the card; an empty dataset keeps one empty first split
        files = write_split(run, split, part, cfg.shard)
        by_split[split] = part
        splits[split] = {
            "rows": part.num_rows,
            "problems": len(pc.unique(part.column("problem_id"))),
            "num_bytes": part.nbytes,  # uncompressed Arrow bytes, as datasets reports them
            "files": files,
        }

    plots = write_plots(run, STAGE, by_split, problem_pass_rates(rows))
    entry = {
        "in": rows.num_rows,
        "out": sft.num_rows,
        "shards": sum(len(s["files"]) for s in splits.values()),
        "splits": {name: {k: v for k, v in s.items() if k != "files"} for name, s in splits.items()},
        "num_bytes": sum(s["num_bytes"] for s in splits.values()),
        "download_bytes": sum(f["bytes"] for s in splits.values() for f in s["files"]),
    }
    entry["seconds"] = round(time.perf_counter() - start, 2)
    stats.record(run, "shard", entry)
    all_stats = run.read_json(stats.STATS_FILE)
    run.write_text(f"{STAGE}/README.md", render_card(cfg, all_stats, sft, splits, plots))
    run.write_json(f"{STAGE}/stats.json", all_stats)
    return entry
