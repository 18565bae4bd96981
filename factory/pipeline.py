"""Runs the stages a pipeline file enables, in order, resuming what is already done.

Each finished stage leaves a marker holding a fingerprint of its settings and inputs; a re-run
skips a stage whose fingerprint is unchanged and redoes it otherwise, so changing `verify` settings
re-verifies without re-generating. Generation resumes row by row (see stages/generate.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable

import pyarrow as pa

from factory import stats
from factory.config import PipelineConfig, SourceConfig
from factory.errors import ConfigError, InputError
from factory.ingest import ingest
from factory.records import PROBLEM_SCHEMA, TRACE_SCHEMA, table
from factory.storage import RunDir

Progress = Callable[[str], None]


def fingerprint(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_rejects(run: RunDir, stage: str, rejects) -> None:
    run.write_text(f"rejects/{stage}.jsonl", "".join(r.to_json() + "\n" for r in rejects))


def ingest_stage(run: RunDir, sources: list[SourceConfig], kind: str, progress: Progress) -> list[dict]:
    """Read sources into problems/ (or traces, for verify's --input); rejects go to rejects/<stage>.jsonl."""
    if not sources:
        raise ConfigError("sources: no input given (add sources to the pipeline file or pass --input)")
    stage = "problems" if kind == "problem" else "input_traces"
    fp = fingerprint([s.model_dump() for s in sources])
    if run.is_done(stage, fp):
        progress(f"{stage}: already ingested")
        return run.read_stage(stage).to_pylist()
    with stats.timed(run, f"ingest_{kind}s" if kind != "problem" else "ingest") as entry:
        rows, rejects = ingest(sources, kind)
        run.reset_stage(stage)
        run.write_part(stage, table(rows, PROBLEM_SCHEMA if kind == "problem" else TRACE_SCHEMA), "part-00000.parquet")
        write_rejects(run, stage, rejects)
        run.mark_done(stage, fp)
        entry.update({"in": len(rows) + len(rejects), "out": len(rows), "rejected": stats.reasons(r.reason for r in rejects)})
    progress(f"{stage}: {len(rows)} rows, {len(rejects)} set aside (rejects/{stage}.jsonl)")
    return rows


def generate_stage(cfg: PipelineConfig, run: RunDir, problems: list[dict], address: str | None, progress: Progress) -> None:
    from factory.runtime import init_ray, require_engine
    from factory.stages.generate import run_generate
    from factory.teacher.model import check_model

    require_engine()
    check_model(cfg.teacher.model, cfg.teacher.revision)
    init_ray(address)
    with stats.timed(run, "generate") as entry:
        result = run_generate(cfg, run, problems, progress)
        entry.update({"in": len(problems), "out": result["new_traces"] + result["resumed_traces"], **result})


def verify_stage(cfg: PipelineConfig, run: RunDir, address: str | None, progress: Progress, traces: list[dict] | None = None) -> None:
    """Verify run_dir/generate, or `traces` brought with --input."""
    import ray

    from factory.runtime import init_ray
    from factory.stages.verify import run_verify

    inputs = run.marker("input_traces") if traces is not None else run.parts("generate")
    if not inputs:
        raise InputError(f"verify: no traces in {run.path('generate')}; run generate first or pass --input")
    fp = fingerprint(cfg.verify.model_dump(), inputs)
    if run.is_done("verify", fp):
        progress("verify: already done with these settings")
        return
    init_ray(address)
    if traces is not None:
        ds = ray.data.from_arrow(table(traces, TRACE_SCHEMA))
    else:
        ds = ray.data.read_parquet(run.parts("generate"), filesystem=run.fs)
    with stats.timed(run, "verify") as entry:
        entry.update(run_verify(cfg.verify, run, ds))
        run.mark_done("verify", fp)
    progress(f"verify: {entry['out']} of {entry['in']} traces accepted")


def shard_stage(cfg: PipelineConfig, run: RunDir, progress: Progress, verified: pa.Table | None = None) -> None:
    from factory.stages.shard import STAGE, run_shard

    if verified is None:
        if not run.marker("verify"):
            raise InputError(f"shard: no finished verify stage in {run.uri}; run verify first or pass --input")
        upstream = run.marker("verify")
    else:
        upstream = fingerprint(*(verified.column(c).to_pylist() for c in ("problem_id", "sample_idx", "accepted", "completion")))
    fp = fingerprint(cfg.shard.model_dump(), cfg.teacher.model_dump(), upstream)
    if run.is_done(STAGE, fp):
        progress("shard: already done with these settings")
        return
    verified = run.read_stage("verify") if verified is None else verified
    entry = run_shard(cfg, run, verified)
    run.mark_done(STAGE, fp)
    progress(f"shard: {entry['out']} SFT rows in {entry['shards']} shard(s) under {run.path(STAGE)}")


def run_pipeline(cfg: PipelineConfig, address: str | None = None, progress: Progress = print) -> RunDir:
    run = RunDir(cfg.run_dir)
    run.write_text("pipeline.yaml", json.dumps(cfg.model_dump(), indent=2) + "\n")  # JSON is valid YAML
    if "generate" in cfg.stages:
        problems = ingest_stage(run, cfg.sources, "problem", progress)
        generate_stage(cfg, run, problems, address, progress)
    if "verify" in cfg.stages:
        verify_stage(cfg, run, address, progress)
    if "shard" in cfg.stages:
        shard_stage(cfg, run, progress)
    return run
