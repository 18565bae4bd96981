"""The `factory` command. Heavy imports (ray, vllm, torch) happen inside commands so --help is instant."""

from __future__ import annotations

import typer

from factory.cli import inspect_cmd, stage_cmds

app = typer.Typer(
    name="factory",
    help="Distillation data factory: teacher traces -> verified, sharded datasets on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stage_cmds.register(app)
inspect_cmd.register(app)


def main() -> None:
    app()
