"""`factory curate`: verified traces -> the curated set in RUN_DIR/curate."""

from __future__ import annotations

import typer

from factory.cli.options import AddressOpt, InputOpt, PipelineOpt, RunDirOpt, SetOpt, echo, handle_errors
from factory.cli.summary import print_summary

REQUIRED_COLUMNS = {"trace_key", "problem_id", "sample_idx", "completion", "accepted", "verdict_math"}


def _input_files(path) -> list[str]:
    import pyarrow.parquet as pq

    from factory.errors import ConfigError, InputError

    if not path.exists():
        raise ConfigError(f"--input: {path} does not exist")
    files = sorted(str(p.resolve()) for p in path.rglob("*.parquet")) if path.is_dir() else [str(path.resolve())]
    if not files:
        raise InputError(f"--input: no .parquet file in {path}")
    try:
        names = set(pq.read_schema(files[0]).names)
    except Exception as e:
        raise InputError(f"--input: cannot read {files[0]} as Parquet: {e}") from e
    missing = REQUIRED_COLUMNS - names
    if missing:
        raise InputError(f"--input: {files[0]} lacks verified-trace columns {sorted(missing)} (run factory verify first)")
    return files


@handle_errors
def curate(
    input: InputOpt = None,
    pipeline: PipelineOpt = None,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    address: AddressOpt = None,
):
    """Dedup, decontaminate, vote, select and mix verified traces (--input, or RUN_DIR/verify) into RUN_DIR/curate."""
    from factory.config import load_config
    from factory.pipeline import curate_stage
    from factory.storage import RunDir

    cfg = load_config(pipeline, set_ or [], run_dir)
    inputs = _input_files(input) if input is not None else None
    run_ = RunDir(cfg.run_dir)
    curate_stage(cfg, run_, address, echo, inputs)
    print_summary(run_)


def register(app: typer.Typer) -> None:
    app.command()(curate)
