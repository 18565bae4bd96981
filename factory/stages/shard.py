"""Shard: accepted traces -> SFT rows in Hugging Face layout, with a dataset card and stats.

run_dir/dataset/data/{split}-{i:05d}-of-{n:05d}.parquet, README.md, stats.json. Rows are ordered by
(problem_id, sample_idx) so the same input gives the same files.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory import stats
from factory.config import PipelineConfig
from factory.records import SFT_SCHEMA, table
from factory.storage import RunDir
from factory.teacher.prompts import chat_messages

STAGE = "dataset"
ROW_GROUP_ROWS = 1000  # small row groups keep streaming reads (datasets streaming=True) light


def verifier_versions() -> str:
    import math_verify

    import verifiers

    return json.dumps(
        {"verifiers": getattr(verifiers, "__version__", "0"), "math_verify": getattr(math_verify, "__version__", "?")},
        sort_keys=True,
    )


def sft_row(trace: dict, cfg: PipelineConfig, versions: str) -> dict:
    messages = chat_messages(cfg.teacher, trace["problem"])
    if cfg.shard.system_prompt and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": cfg.shard.system_prompt})
    messages.append({"role": "assistant", "content": trace["completion"]})
    return {
        "messages": messages,
        "problem_id": trace["problem_id"],
        "source": trace["source"],
        "domain": trace["domain"],
        "answer": trace["answer"],
        "num_tokens": (trace["prompt_tokens"] or 0) + (trace["completion_tokens"] or 0) or None,
        "teacher": trace["teacher"],
        "sampling": trace["sampling"],
        "verifiers": versions,
        "trace_key": trace["trace_key"],
    }


def run_shard(cfg: PipelineConfig, run: RunDir, verified: pa.Table) -> dict:
    from factory.card import render_card

    start = time.perf_counter()
    accepted = verified.filter(pc.field("accepted")).sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
    versions = verifier_versions()
    sft = table([sft_row(t, cfg, versions) for t in accepted.to_pylist()], SFT_SCHEMA)
    run.reset_stage(STAGE)
    split, per = cfg.shard.split, cfg.shard.max_rows_per_shard
    n_shards = max(1, -(-sft.num_rows // per))
    num_bytes = 0
    for i in range(n_shards):
        path = run.path(STAGE, "data", f"{split}-{i:05d}-of-{n_shards:05d}.parquet")
        run.fs.makedirs(run.path(STAGE, "data"), exist_ok=True)
        part = sft.slice(i * per, per)
        pq.write_table(part, path, filesystem=run.fs, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        num_bytes += part.nbytes
    entry = {"in": verified.num_rows, "out": sft.num_rows, "shards": n_shards, "split": split, "num_bytes": num_bytes}
    entry["seconds"] = round(time.perf_counter() - start, 2)
    stats.record(run, "shard", entry)
    all_stats = run.read_json(stats.STATS_FILE)
    run.write_text(f"{STAGE}/README.md", render_card(cfg, all_stats, sft, num_bytes))
    run.write_json(f"{STAGE}/stats.json", all_stats)
    return entry
