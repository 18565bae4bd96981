"""`factory publish`: check a run's dataset folder and upload it to the Hugging Face Hub."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from factory.cli.options import PipelineOpt, SetOpt, echo, handle_errors


@handle_errors
def publish(
    run_dir: Annotated[str, typer.Argument(help="Run directory (or its dataset/ folder), path or URI.")],
    repo_id: Annotated[
        Optional[str], typer.Option("--repo-id", help="Hub dataset repository ORG/NAME; default: publish.repo_id.")
    ] = None,
    private: Annotated[
        Optional[bool], typer.Option("--private/--public", help="Repository visibility; default: publish.private.")
    ] = None,
    revision: Annotated[
        Optional[str], typer.Option("--revision", help="Branch to commit to, created when missing; default: main.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the folder and list what would be uploaded; no network, no token.")
    ] = False,
    pipeline: PipelineOpt = None,
    set_: SetOpt = None,
):
    """Check RUN_DIR/dataset (card header, shards, row counts) and upload it; the token comes from
    HF_TOKEN or `hf auth login` and is never printed."""
    from pydantic import ValidationError

    from factory.config import PublishConfig, load_config
    from factory.errors import ConfigError
    from factory.publish import publish as publish_folder

    settings = load_config(pipeline, set_ or []).publish.model_dump()
    flags = {"repo_id": repo_id, "private": private, "revision": revision}
    try:
        cfg = PublishConfig(**{**settings, **{k: v for k, v in flags.items() if v is not None}})
    except ValidationError as e:
        raise ConfigError(f"--repo-id: {e.errors()[0]['msg']}") from None
    if not cfg.repo_id:
        raise ConfigError("--repo-id: needed (or publish.repo_id in the pipeline file), as ORG/NAME")
    publish_folder(
        run_dir,
        cfg.repo_id,
        private=cfg.private,
        revision=cfg.revision,
        commit_message=cfg.commit_message,
        dry_run=dry_run,
        progress=echo,
    )


def register(app: typer.Typer) -> None:
    app.command()(publish)
