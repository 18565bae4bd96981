"""The `factory` command. Heavy imports (ray, vllm, torch) happen inside commands so --help is instant."""

from __future__ import annotations

import typer

from factory.cli import curate_cmd, inspect_cmd, job_cmds, publish_cmd, sft_cmds, stage_cmds, teacher_cmds

app = typer.Typer(
    name="factory",
    help="Distillation data factory: teacher traces -> verified, sharded datasets on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stage_cmds.register(app)
curate_cmd.register(app)
inspect_cmd.register(app)
publish_cmd.register(app)
sft_cmds.register(app)
job_cmds.register(app)
teacher_cmds.register(app)


def main() -> None:
    app()
