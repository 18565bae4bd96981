"""Jobs on a Ray cluster: `submit` (or render a KubeRay RayJob), `status`, `logs`, `stop`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from factory.cli.options import RunDirOpt, SetOpt, echo, handle_errors

JobAddressOpt = Annotated[
    Optional[str],
    typer.Option(
        "--address",
        help="Ray dashboard address, e.g. http://HEAD:8265; default RAY_ADDRESS, else http://127.0.0.1:8265.",
    ),
]
JobIdArg = Annotated[str, typer.Argument(help="Job id printed by `factory submit`.")]


def _print_stats(run_dir: str) -> None:
    """The run's stats.json as the summary table, when the run directory is reachable from here."""
    from factory.cli.summary import stage_table
    from factory.storage import RunDir

    try:
        stats = RunDir(run_dir).read_json("stats.json", default={})
    except OSError as e:  # a cluster-local path or a bucket this machine has no access to
        echo(f"stats: {run_dir} is not readable from here ({type(e).__name__})")
        return
    typer.echo(f"run directory: {run_dir}")
    if stats:
        typer.echo(stage_table(stats))


def _print_end(address: str | None, job_id: str) -> None:
    from factory import jobs

    details = jobs.info(address, job_id)
    typer.echo(f"job {job_id}: {details.status.value}" + (f" ({details.message})" if details.message else ""))
    if run_dir := (details.metadata or {}).get("factory_run_dir"):
        _print_stats(run_dir)
    if details.status.value != "SUCCEEDED":
        sys.exit(1)


@handle_errors
def submit(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    address: JobAddressOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream the job's log until it ends.")] = False,
    pip: Annotated[
        bool,
        typer.Option(
            "--pip/--no-pip", help="pip-install the project's dependencies on the cluster (for an image without them)."
        ),
    ] = False,
    extra: Annotated[str, typer.Option("--extra", help="Engine extra installed with --pip: gpu, cpu or none.")] = "gpu",
    kuberay: Annotated[
        bool, typer.Option("--kuberay", help="Render a KubeRay RayJob (+ ConfigMap) instead of submitting.")
    ] = False,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="With --kuberay: write here, not stdout.")
    ] = None,
    template: Annotated[
        Optional[Path], typer.Option("--template", help="With --kuberay: RayJob template; default cluster/rayjob.yaml.")
    ] = None,
):
    """Run a pipeline on a Ray cluster as a Ray Job: the project, the pipeline file and its inputs travel with it."""
    from factory import jobs

    bundle = jobs.job_bundle(pipeline, set_ or [], run_dir, in_pods=kuberay)
    for rel, src in bundle.files.items():
        echo(f"carrying {src} as {rel}")
    if kuberay:
        manifest = jobs.render_rayjob(bundle, template or jobs.KUBERAY_TEMPLATE)
        if output is None:
            typer.echo(manifest, nl=False)
        else:
            output.write_text(manifest)
            echo(f"wrote {output}: kubectl apply -f {output}")
        return
    job_id, url = jobs.submit(bundle, address, pip=pip, extra=None if extra == "none" else extra)
    typer.echo(job_id)
    echo(f"dashboard: {url}")
    echo(f"run directory: {bundle.cfg.run_dir}")
    if not follow:
        echo(f"follow it: factory logs {job_id} --follow   status: factory status {job_id}")
        return
    jobs.follow_logs(address, job_id, lambda chunk: typer.echo(chunk, nl=False))
    _print_end(address, job_id)


@handle_errors
def status(job_id: JobIdArg, address: JobAddressOpt = None):
    """A job's state, and its run's per-stage counts (stats.json) when the run directory is reachable."""
    from factory import jobs

    details = jobs.info(address, job_id)
    typer.echo(f"job {job_id}: {details.status.value}" + (f" ({details.message})" if details.message else ""))
    typer.echo(f"entrypoint: {details.entrypoint}")
    if run_dir := (details.metadata or {}).get("factory_run_dir"):
        _print_stats(run_dir)


@handle_errors
def logs(
    job_id: JobIdArg,
    address: JobAddressOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")] = False,
):
    """A job's log: stage progress lines, counts and the final summary."""
    from factory import jobs

    if follow:
        jobs.follow_logs(address, job_id, lambda chunk: typer.echo(chunk, nl=False))
    else:
        typer.echo(jobs.logs(address, job_id), nl=False)


@handle_errors
def stop(job_id: JobIdArg, address: JobAddressOpt = None):
    """Stop a running job; a later `factory submit` of the same pipeline and run_dir resumes it."""
    from factory import jobs

    stopped = jobs.stop(address, job_id)
    typer.echo(f"job {job_id}: {'stop requested' if stopped else 'already ended'}")


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(status)
    app.command()(logs)
    app.command()(stop)
