"""Runs the stages a pipeline file enables, in order, resuming what is already done.

Each finished stage leaves a marker holding a fingerprint of its settings and inputs; a re-run
skips a stage whose fingerprint is unchanged and redoes it otherwise, so changing `verify` settings
re-verifies without re-generating. Generation resumes row by row (see stages/generate.py).
"""

from __future__ import annotations

import hashlib
import json
import time
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


def generate_stage(
    cfg: PipelineConfig, run: RunDir, problems: list[dict], address: str | None, progress: Progress, first_idx: int = 0
) -> None:
    """Traces for `problems` (sample indices first_idx..first_idx+n-1); stats.json's entry holds all traces on disk."""
    import ray

    from factory.runtime import init_ray, require_engine
    from factory.stages.generate import STAGE, run_generate
    from factory.teacher.engine import check_fits
    from factory.teacher.model import check_model

    if cfg.teacher.backend == "openai":  # no engine or Ray here: requests go to teacher.api's server
        from factory.teacher.openai_backend import preflight

        preflight(cfg)
    else:
        require_engine()
        check_model(cfg.teacher.model, cfg.teacher.revision)
        init_ray(address)
        check_fits(cfg.teacher, ray.cluster_resources())
    start = time.perf_counter()
    entry = run_generate(cfg, run, problems, progress, first_idx)
    out = sum(s["traces"] for s in entry["sources"].values())
    stats.record(run, STAGE, {"in": len(problems), "out": out, **entry, "seconds": round(time.perf_counter() - start, 2)})


def rejection_rounds(
    cfg: PipelineConfig,
    run: RunDir,
    problems: list[dict],
    generate: Callable[[list[dict], int], None],
    verify: Callable[[], None],
    progress: Progress,
) -> None:
    """`teacher.until_accepted: k`: problems with fewer than k accepted traces get n more samples (new
    sample indices, so new keys) per round, verified before the next round, up to `teacher.max_rounds`.

    `generate(problems, first_idx)` and `verify()` run the stages. A re-run walks the same rounds: the
    samples it asks for are on disk already, so nothing is redone.
    """
    from factory.stages.generate import short_of

    k, n = cfg.teacher.until_accepted, cfg.teacher.sampling.n
    for rnd in range(1, cfg.teacher.max_rounds):
        short = short_of(run.read_stage("verify", columns=["problem_id", "accepted"]), problems, k)
        if not short:
            break
        progress(f"round {rnd + 1}/{cfg.teacher.max_rounds}: {len(short)} problems have fewer than {k} accepted traces")
        generate(short, rnd * n)
        verify()


def verify_stage(cfg: PipelineConfig, run: RunDir, address: str | None, progress: Progress, traces: list[dict] | None = None) -> None:
    """Verify run_dir/generate, or `traces` brought with --input."""
    import ray

    from factory.runtime import init_ray
    from factory.stages.verify import run_verify, unverified

    inputs = run.marker("input_traces") if traces is not None else run.parts("generate")
    if not inputs:
        raise InputError(f"verify: no traces in {run.path('generate')}; run generate first or pass --input")
    fp = fingerprint(cfg.verify.model_dump(), inputs)
    if run.is_done("verify", fp):
        progress("verify: already done with these settings")
        return
    init_ray(address)
    with stats.timed(run, "verify") as entry:
        if traces is not None:
            entry.update(run_verify(cfg.verify, run, ray.data.from_arrow(table(traces, TRACE_SCHEMA))))
        else:
            settings_key = fingerprint(cfg.verify.model_dump())
            todo = unverified(run, settings_key, inputs)
            ds = ray.data.read_parquet(todo, filesystem=run.fs) if todo else None
            entry.update(run_verify(cfg.verify, run, ds, settings_key, todo))
        run.mark_done("verify", fp)
    progress(f"verify: {entry['out']} of {entry['in']} traces accepted ({entry['verified_now']} verified in this run)")


def curate_stage(cfg: PipelineConfig, run: RunDir, address: str | None, progress: Progress, inputs: list[str] | None = None) -> None:
    """Curate run_dir/verify, or the verified Parquet files `inputs` (--input), into run_dir/curate."""
    from factory.runtime import init_ray
    from factory.stages.curate import STAGE, UPSTREAM_FILE, benchmarks_signature, files_signature, run_curate

    if inputs is None:
        if not run.marker("verify"):
            raise InputError(f"curate: no finished verify stage in {run.uri}; run verify first or pass --input")
        paths, fs, upstream = run.parts("verify"), run.fs, run.marker("verify")
    else:
        paths, fs, upstream = inputs, _local_fs(), fingerprint(files_signature(inputs))
    fp = fingerprint(cfg.curate.model_dump(), cfg.verify.model_dump(), upstream, benchmarks_signature(cfg))
    if run.is_done(STAGE, fp):
        progress("curate: already done with these settings")
        return
    init_ray(address)
    with stats.timed(run, STAGE) as entry:
        entry.update(run_curate(cfg, run, paths, fs, progress))
        run.write_text(UPSTREAM_FILE, upstream)
        run.mark_done(STAGE, fp)
    progress(f"curate: {entry['out']} of {entry['in']} traces kept (reasons in rejects/curate.jsonl)")


def _local_fs():
    import fsspec

    return fsspec.filesystem("file")


def shard_input(run: RunDir) -> str:
    """curate/ when a finished curate stage was made from the current verify/, else verify/ (its accepted rows)."""
    from factory.stages.curate import STAGE, UPSTREAM_FILE

    if not run.marker(STAGE):
        return "verify"
    verify = run.marker("verify")
    if verify is not None and run.exists(UPSTREAM_FILE) and run.read_text(UPSTREAM_FILE) != verify:
        raise InputError(f"shard: {run.path(STAGE)} was made from an older verify/; run `factory curate` again or delete it")
    return STAGE


def shard_stage(cfg: PipelineConfig, run: RunDir, progress: Progress, verified: pa.Table | None = None) -> None:
    from factory.stages.shard import STAGE, ShardInput, run_shard

    source = shard_input(run) if verified is None else None
    if verified is None:
        if not run.marker(source):
            raise InputError(f"shard: no finished verify stage in {run.uri}; run verify first or pass --input")
        upstream = run.marker(source)
    else:
        upstream = fingerprint(*(verified.column(c).to_pylist() for c in ("problem_id", "sample_idx", "accepted", "completion")))
    fp = fingerprint(cfg.shard.model_dump(), cfg.teacher.model_dump(), upstream)
    if run.is_done(STAGE, fp):
        progress("shard: already done with these settings")
        return
    entry = run_shard(cfg, run, ShardInput.of_stage(run, source) if verified is None else ShardInput.of_table(verified))
    run.mark_done(STAGE, fp)
    progress(f"shard: {entry['out']} SFT rows in {entry['shards']} shard(s) under {run.path(STAGE)}")


def publish_stage(cfg: PipelineConfig, run: RunDir, progress: Progress) -> None:
    """Upload run_dir/dataset to publish.repo_id; skipped when this dataset already went there."""
    from factory.publish import publish

    if not run.marker("dataset"):
        raise InputError(f"publish: no finished shard stage in {run.uri}; run shard first")
    fp = fingerprint(cfg.publish.model_dump(), run.marker("dataset"))
    if run.is_done("publish", fp):
        progress(f"publish: already published to {cfg.publish.repo_id}")
        return
    p = cfg.publish
    publish(run.uri, p.repo_id, private=p.private, revision=p.revision, commit_message=p.commit_message, progress=progress)
    run.mark_done("publish", fp)


def run_pipeline(cfg: PipelineConfig, address: str | None = None, progress: Progress = print) -> RunDir:
    run = RunDir(cfg.run_dir)
    run.write_text("pipeline.yaml", json.dumps(cfg.model_dump(), indent=2) + "\n")  # JSON is valid YAML
    if "generate" in cfg.stages:
        problems = ingest_stage(run, cfg.sources, "problem", progress)
        generate_stage(cfg, run, problems, address, progress)
    if "verify" in cfg.stages:
        verify_stage(cfg, run, address, progress)
        if cfg.teacher.until_accepted and "generate" in cfg.stages:  # rounds generate more samples
            rejection_rounds(
                cfg, run, problems,
                lambda short, first_idx: generate_stage(cfg, run, short, address, progress, first_idx),
                lambda: verify_stage(cfg, run, address, progress),
                progress,
            )
        if "generate" in cfg.stages:
            from factory.stages.generate import record_per_accepted

            record_per_accepted(run)
    if "curate" in cfg.stages:
        curate_stage(cfg, run, address, progress)
    if "shard" in cfg.stages:
        shard_stage(cfg, run, progress)
    if "publish" in cfg.stages:
        publish_stage(cfg, run, progress)
    if "sft" in cfg.stages:
        from factory.sft.train import run_sft

        run_sft(cfg, run, address, progress)
    if "eval" in cfg.stages:
        from factory.eval.run import run_eval

        run_eval(cfg, run, address, progress)
    return run
