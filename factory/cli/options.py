"""Options shared by the commands, and the one place that turns our errors into a clean exit."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from factory.errors import FactoryError

SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a pipeline key: --set teacher.sampling.n=4 (repeatable)."),
]
RunDirOpt = Annotated[Optional[str], typer.Option("--run-dir", "-r", help="Run directory (path or URI); overrides run_dir.")]
AddressOpt = Annotated[
    Optional[str], typer.Option("--address", help="Ray cluster address; default RAY_ADDRESS or a local instance.")
]
PipelineOpt = Annotated[
    Optional[Path], typer.Option("--pipeline", "-p", help="Pipeline file for settings; default: built-in defaults.")
]
InputOpt = Annotated[Optional[Path], typer.Option("--input", "-i", help="Input rows: JSONL or Parquet file/folder.")]


def echo(message: str) -> None:
    typer.echo(message, err=True)


def handle_errors(fn):
    """A FactoryError is a message for the user: print it and exit 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FactoryError as e:
            typer.echo(f"error: {e}", err=True)
            sys.exit(2)

    return wrapper
