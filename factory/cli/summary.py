"""The one-screen summary each command ends with, and `factory inspect`'s view of a run."""

from __future__ import annotations

import typer

from factory.storage import RunDir


def stage_table(stats: dict) -> str:
    lines = [f"{'stage':<16}{'in':>8}{'out':>8}{'seconds':>10}  set aside"]
    for name, entry in stats.items():
        rejected = ", ".join(f"{k}={v}" for k, v in list(entry.get("rejected", {}).items())[:4])
        lines.append(
            f"{name:<16}{entry.get('in', ''):>8}{entry.get('out', ''):>8}{entry.get('seconds', ''):>10}  {rejected}"
        )
    return "\n".join(lines)


def print_summary(run: RunDir) -> None:
    stats = run.read_json("stats.json", default={})
    typer.echo(f"\nrun directory: {run.uri}")
    if stats:
        typer.echo(stage_table(stats))
    if run.exists("dataset", "README.md"):
        typer.echo(f"dataset: {run.path('dataset')} (card: README.md)")
