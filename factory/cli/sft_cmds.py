"""`factory sft` (fine-tune a student on Ray Train) and `factory eval` (score a model on benchmark files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from factory.cli.options import AddressOpt, PipelineOpt, RunDirOpt, SetOpt, echo, handle_errors
from factory.cli.summary import print_summary


def _config(pipeline, overrides: list[str], run_dir):
    from factory.config import load_config

    return load_config(pipeline, overrides, run_dir)


@handle_errors
def sft(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Student: Hub id or local folder (sft.model).")] = None,
    dataset: Annotated[
        Optional[str], typer.Option("--dataset", "-d", help="Dataset folder or Hub name; default RUN_DIR/dataset.")
    ] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", help="Ray Train workers (sft.num_workers).")] = None,
    pipeline: PipelineOpt = None,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    address: AddressOpt = None,
):
    """Fine-tune a student on the dataset; checkpoints and the final model go to RUN_DIR/sft.

    Re-running the same command resumes from the last checkpoint."""
    from factory.sft.train import run_sft
    from factory.storage import RunDir

    overrides = list(set_ or [])
    for key, value in (("model", model), ("dataset", dataset), ("num_workers", workers)):
        if value is not None:
            overrides.append(f"sft.{key}={value}")
    cfg = _config(pipeline, overrides, run_dir)
    run_ = RunDir(cfg.run_dir)
    run_sft(cfg, run_, address, echo)
    print_summary(run_)


@handle_errors
def eval(  # noqa: A001 - the command's name
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model folder or Hub id; default RUN_DIR/sft/final.")] = None,
    benchmark: Annotated[
        Optional[list[Path]], typer.Option("--benchmark", "-b", help="Benchmark file (JSONL/Parquet); repeatable.")
    ] = None,
    n: Annotated[Optional[int], typer.Option("--n", "-n", help="Samples per problem (eval.sampling.n).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="First N problems of each benchmark.")] = None,
    pipeline: PipelineOpt = None,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    address: AddressOpt = None,
):
    """Score a model on benchmark files: pass@1, pass@k and maj@k per benchmark, into RUN_DIR/eval."""
    from factory.config import BenchmarkConfig
    from factory.errors import ConfigError
    from factory.eval.run import run_eval, summary_table
    from factory.storage import RunDir

    overrides = list(set_ or [])
    if model is not None:
        overrides.append(f"eval.model={model}")
    if n is not None:
        overrides.append(f"eval.sampling.n={n}")
        overrides.append(f"eval.k={sorted({1, n})}")
    cfg = _config(pipeline, overrides, run_dir)
    for path in benchmark or []:
        if not path.exists():
            raise ConfigError(f"--benchmark: {path} does not exist")
        cfg.eval.benchmarks.append(BenchmarkConfig(path=str(path.resolve())))
    if limit is not None:
        for b in cfg.eval.benchmarks:
            b.limit = limit
    run_ = RunDir(cfg.run_dir)
    results = run_eval(cfg, run_, address, echo)
    print_summary(run_)
    typer.echo(summary_table(results))


def register(app: typer.Typer) -> None:
    app.command()(sft)
    app.command()(eval)
