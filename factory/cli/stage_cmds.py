"""`factory run` and the stages run alone: `generate`, `verify`, `shard`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from factory.cli.options import AddressOpt, InputOpt, PipelineOpt, RunDirOpt, SetOpt, echo, handle_errors
from factory.cli.summary import print_summary


def _config(pipeline, overrides, run_dir):
    from factory.config import load_config

    return load_config(pipeline, overrides or [], run_dir)


def _sources(cfg, input_path: Path | None):
    from factory.config import SourceConfig
    from factory.errors import ConfigError

    if input_path is None:
        return cfg.sources
    if not input_path.exists():
        raise ConfigError(f"--input: {input_path} does not exist")
    # Field mapping and domain come from the pipeline's first source, if any.
    base = cfg.sources[0].model_dump(exclude={"path", "hf", "format", "name", "limit"}) if cfg.sources else {}
    return [SourceConfig(path=str(input_path.resolve()), **base)]


@handle_errors
def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    address: AddressOpt = None,
):
    """Run every stage the pipeline file enables, resuming what is already done."""
    from factory.pipeline import run_pipeline

    cfg = _config(pipeline, set_, run_dir)
    print_summary(run_pipeline(cfg, address, progress=echo))


@handle_errors
def generate(
    input: InputOpt = None,
    pipeline: PipelineOpt = None,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    address: AddressOpt = None,
):
    """Teacher traces for problems (--input, or the pipeline's sources) into RUN_DIR/generate."""
    from factory.pipeline import generate_stage, ingest_stage
    from factory.storage import RunDir

    cfg = _config(pipeline, set_, run_dir)
    run_ = RunDir(cfg.run_dir)
    problems = ingest_stage(run_, _sources(cfg, input), "problem", echo)
    generate_stage(cfg, run_, problems, address, echo)
    print_summary(run_)


@handle_errors
def verify(
    input: InputOpt = None,
    pipeline: PipelineOpt = None,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    address: AddressOpt = None,
):
    """Verify traces (--input rows carrying `completion`, or RUN_DIR/generate) into RUN_DIR/verify."""
    from factory.pipeline import ingest_stage, verify_stage
    from factory.storage import RunDir

    cfg = _config(pipeline, set_, run_dir)
    run_ = RunDir(cfg.run_dir)
    traces = ingest_stage(run_, _sources(cfg, input), "trace", echo) if input else None
    verify_stage(cfg, run_, address, echo, traces)
    print_summary(run_)


@handle_errors
def shard(
    input: InputOpt = None,
    pipeline: PipelineOpt = None,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
):
    """Accepted traces (--input verified Parquet, or RUN_DIR/verify) as SFT shards + card in RUN_DIR/dataset."""
    from factory.errors import InputError
    from factory.pipeline import shard_stage
    from factory.storage import RunDir

    cfg = _config(pipeline, set_, run_dir)
    run_ = RunDir(cfg.run_dir)
    verified = None
    if input is not None:
        import pyarrow.parquet as pq

        try:
            verified = pq.read_table(input)
        except Exception as e:
            raise InputError(f"--input: cannot read {input} as Parquet: {e}") from e
        missing = {"accepted", "completion", "problem_id", "sample_idx"} - set(verified.column_names)
        if missing:
            raise InputError(f"--input: {input} lacks verified-trace columns {sorted(missing)}")
    shard_stage(cfg, run_, echo, verified)
    print_summary(run_)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(generate)
    app.command()(verify)
    app.command()(shard)
