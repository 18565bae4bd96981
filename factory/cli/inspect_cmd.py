"""`factory inspect`: stats and a few samples of a run directory or a dataset folder."""

from __future__ import annotations

from typing import Annotated

import typer

from factory.cli.options import handle_errors
from factory.cli.summary import stage_table


def _clip(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


@handle_errors
def inspect(
    path: Annotated[str, typer.Argument(help="A run directory or a dataset folder.")],
    samples: Annotated[int, typer.Option("--samples", "-n", help="How many rows to show.")] = 3,
):
    """Print a run's per-stage stats and a few samples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from factory.errors import InputError
    from factory.storage import RunDir

    run = RunDir(path)
    if not run.exists():
        raise InputError(f"{path} does not exist")
    stats = run.read_json("stats.json", default={})
    typer.echo(stage_table(stats) if stats else "no stats.json here")
    data = run.path("data") if run.exists("data") else run.path("dataset", "data")
    if run.fs.exists(data):
        files = sorted(run.fs.glob(f"{data}/*.parquet"))
        rows = pa.concat_tables([pq.read_table(f, filesystem=run.fs) for f in files]).slice(0, samples).to_pylist()
        typer.echo(f"\n{len(files)} shard(s) in {data}; first {len(rows)} row(s):")
        for row in rows:
            typer.echo(f"- {row['problem_id']} [{row['source']}/{row['domain']}] {row['num_tokens']} tokens")
            for m in row["messages"]:
                typer.echo(f"    {m['role']}: {_clip(m['content'], 110)}")
    elif run.parts("verify"):
        rows = run.read_stage("verify").slice(0, samples).to_pylist()
        for row in rows:
            typer.echo(f"- {row['trace_key']} accepted={row['accepted']} {row['reject_reason'] or ''}")
            typer.echo(f"    {_clip(row['completion'], 110)}")


def register(app: typer.Typer) -> None:
    app.command()(inspect)
