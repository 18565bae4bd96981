"""`factory serve-teacher`: the pipeline's teacher as an OpenAI-compatible server on the Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from factory.cli.options import AddressOpt, SetOpt, echo, handle_errors


@handle_errors
def serve_teacher(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file (its teacher section is served).")],
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for other machines).")] = "127.0.0.1",
    set_: SetOpt = None,
    address: AddressOpt = None,
):
    """Serve the teacher with vLLM's OpenAI API under Ray Serve until Ctrl-C; prints the base_url to use."""
    from factory.config import load_config
    from factory.runtime import require_engine
    from factory.teacher.model import check_model
    from factory.teacher.serve import serve_teacher as serve

    cfg = load_config(pipeline, set_ or [])
    require_engine()
    check_model(cfg.teacher.model, cfg.teacher.revision)
    serve(cfg, host, port, address, progress=echo)


def register(app: typer.Typer) -> None:
    app.command("serve-teacher")(serve_teacher)
