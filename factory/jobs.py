"""A pipeline run as a Ray Job: the bundle it carries, its submission, status, logs and stop,
and the KubeRay RayJob manifest that carries the same bundle.

The job's working directory is a small bundle: `pipeline.yaml` (the settings after `--set`, so the
cluster runs exactly what was asked) and `inputs/` (every local file the pipeline reads: sources,
prompt and chat templates, benchmark files; each path rewritten relative to the bundle). The
project's own packages travel as `py_modules`, so the client's version of the code is what runs;
Python dependencies come from the cluster's image, or from pip with `pip=True`.
Model weights are never carried (too big): a teacher or student is a Hub id, or a folder every node sees.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import factory
from factory.config import PipelineConfig, load_config
from factory.errors import ConfigError, FactoryError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PIPELINE_FILE = "pipeline.yaml"
PACKAGES = ("factory", "verifiers", "data_cards")
# The entrypoint runs with the cluster's Python; `python -m` finds the shipped packages on PYTHONPATH.
ENTRYPOINT = f"python -m factory.cli run {PIPELINE_FILE}"
# Where the run directory lives, forwarded to the job; credentials never are (the cluster has its own:
# an instance role, a service account, its own environment), since a runtime_env shows in the dashboard.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "FSSPEC_S3_ENDPOINT_URL",
)
JOB_ENV = {"FACTORY_PROGRESS_BARS": "0", "PYTHONUNBUFFERED": "1"}  # plain progress lines in the job's log
REPO = Path(factory.__file__).resolve().parent.parent
KUBERAY_TEMPLATE = REPO / "cluster" / "rayjob.yaml"
KUBERAY_MOUNT = "/home/ray/job"
CONFIGMAP_LIMIT = 1_000_000  # Kubernetes refuses ConfigMaps over 1 MiB


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so a rendered manifest reads like the files it carries."""


_Dumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)
)


class JobError(FactoryError):
    """The cluster cannot be reached, refused us, or does not know the job."""


@dataclass
class JobBundle:
    cfg: PipelineConfig  # local input paths rewritten to bundle-relative ones
    files: dict[str, Path] = field(default_factory=dict)  # bundle path -> local file or folder
    name: str = "pipeline"

    def pipeline_yaml(self) -> str:
        settings = self.cfg.model_dump(mode="json", exclude_defaults=True)
        return yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)

    def write(self, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / PIPELINE_FILE).write_text(self.pipeline_yaml())
        for rel, src in self.files.items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, target)
        return dest

    def file_items(self) -> list[tuple[str, bytes]]:
        """(bundle path, content) of every file, folders walked; the pipeline file first."""
        items = [(PIPELINE_FILE, self.pipeline_yaml().encode())]
        for rel, src in self.files.items():
            found = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
            items += [(rel if p == src else f"{rel}/{p.relative_to(src).as_posix()}", p.read_bytes()) for p in found]
        return items


def _is_model_key(path: tuple) -> bool:
    return bool(path) and path[-1] == "model"


def _local_inputs(node, path: tuple = ()):
    """(key path, value) of every string in the config naming an existing local file or folder.

    load_config has made every input path absolute, so an absolute existing path is an input. Generic on
    purpose: a stage that adds a file setting is carried without touching this module.
    """
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _local_inputs(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _local_inputs(v, (*path, i))
    elif isinstance(node, str) and path != ("run_dir",) and not _is_model_key(path):
        if "://" not in node and Path(node).is_absolute() and Path(node).exists():
            yield path, node


def _set(data, path: tuple, value) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def job_bundle(
    pipeline: str | Path, overrides: list[str] = (), run_dir: str | None = None, *, in_pods: bool = False
) -> JobBundle:
    """The pipeline's settings and local inputs as a bundle; a bad file fails here, before any submission.

    A relative local run_dir becomes absolute for the client's working directory, which is right on a
    one-machine cluster or a shared filesystem; remote clusters want s3://, gs:// or a mounted volume.
    With `in_pods` (KubeRay), a relative run_dir is an error: no laptop path means anything in a pod.
    """
    cfg = load_config(pipeline, list(overrides), run_dir)
    if "://" not in cfg.run_dir and not Path(cfg.run_dir).is_absolute():
        if in_pods:
            raise ConfigError(
                f"run_dir: {cfg.run_dir!r} is a local path; a KubeRay job needs s3://, gs:// or an absolute path "
                "on a volume its pods mount (--run-dir)"
            )
        cfg.run_dir = str(Path(cfg.run_dir).resolve())
    data = cfg.model_dump(mode="json")
    files: dict[str, Path] = {}
    carried: dict[str, str] = {}  # one copy per local path, however many keys name it
    for key_path, value in list(_local_inputs(data)):
        if value not in carried:
            carried[value] = f"inputs/{len(carried)}-{Path(value).name}"
            files[carried[value]] = Path(value)
        _set(data, key_path, carried[value])
    return JobBundle(PipelineConfig.model_validate(data), files, Path(pipeline).stem)


def new_job_id(name: str) -> str:
    """Readable and unique: factory-<pipeline>-<UTC time>-<4 hex>; also a valid Kubernetes name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:24] or "pipeline"
    return f"factory-{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:4]}"


def project_requirements(extra: str | None) -> list[str]:
    """The project's dependencies for a cluster image without them; Ray itself is the cluster's."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        reqs = [Requirement(r) for r in requires("distill-factory") or []]
    except PackageNotFoundError:
        raise JobError("--pip needs the project installed here (pip install -e .) to read its dependencies") from None
    wanted = {"extra": extra or ""}
    return [
        str(r).split(";")[0].strip()
        for r in reqs
        if r.name != "ray" and (r.marker is None or r.marker.evaluate(wanted))
    ]


def job_env_vars() -> dict[str, str]:
    return {**JOB_ENV, **{k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}}


def runtime_env(bundle_dir: Path, pip: bool = False, extra: str | None = "gpu") -> dict:
    env = {
        "working_dir": str(bundle_dir),
        "py_modules": [str(REPO / p) for p in PACKAGES],
        "excludes": ["__pycache__", "*.pyc"],
        "env_vars": job_env_vars(),
    }
    if pip:
        env["pip"] = project_requirements(extra)
    return env


def _enable_token_auth() -> None:
    """Ray 2.60 clusters want a token (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH); the
    client only sends it in token mode, so turn that on when a token is at hand and the user chose no mode."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        from ray._raylet import Config  # the mode is cached when ray is imported; re-read it

        Config.initialize("")


def client(address: str | None):
    """A JobSubmissionClient for --address, RAY_ADDRESS or the local default, with errors made readable."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    _enable_token_auth()
    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as e:
        raise JobError(
            f"the Ray cluster at {address} refused us ({_first_line(e)}): give its token in RAY_AUTH_TOKEN or "
            "~/.ray/auth_token, with RAY_AUTH_MODE=token or unset"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise JobError(f"cannot reach the Ray dashboard at {address}: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def dashboard_url(c, job_id: str | None = None) -> str:
    base = c.get_address().rstrip("/")
    return f"{base}/#/jobs/{job_id}" if job_id else base


def submit(bundle: JobBundle, address: str | None, pip: bool = False, extra: str | None = "gpu") -> tuple[str, str]:
    """Submit the bundle; returns (job id, dashboard URL of the job)."""
    c = client(address)
    job_id = new_job_id(bundle.name)
    with tempfile.TemporaryDirectory(prefix="factory-job-") as tmp:
        env = runtime_env(bundle.write(Path(tmp) / "bundle"), pip, extra)
        try:
            c.submit_job(
                entrypoint=ENTRYPOINT,
                submission_id=job_id,
                runtime_env=env,  # uploaded here, before the folder goes
                metadata={"factory_pipeline": bundle.name, "factory_run_dir": bundle.cfg.run_dir},
            )
        except RuntimeError as e:
            raise JobError(f"the cluster refused the job: {_first_line(e)}") from None
    return job_id, dashboard_url(c, job_id)


def _call(fn, job_id: str):
    try:
        return fn(job_id)
    except RuntimeError as e:
        raise JobError(f"job {job_id}: {_first_line(e)}") from None


def info(address: str | None, job_id: str):
    return _call(client(address).get_job_info, job_id)


def logs(address: str | None, job_id: str) -> str:
    return _call(client(address).get_job_logs, job_id)


def follow_logs(address: str | None, job_id: str, write) -> None:
    """Stream the job's log to `write` until the job ends."""
    import asyncio

    c = client(address)
    _call(c.get_job_info, job_id)  # an unknown id fails here, not as a closed websocket

    async def tail():
        async for chunk in c.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())


def stop(address: str | None, job_id: str) -> bool:
    return _call(client(address).stop_job, job_id)


# --- KubeRay ---
def _configmap_key(rel: str) -> str:
    return re.sub(r"[^-._a-zA-Z0-9]", "_", rel.replace("/", "__"))


def render_rayjob(bundle: JobBundle, template: Path = KUBERAY_TEMPLATE, job_id: str | None = None) -> str:
    """A ConfigMap holding the bundle and the RayJob that mounts it on the head and runs the pipeline.

    The template (cluster/rayjob.yaml) holds the cluster: images, node groups, autoscaling. We set the
    names, the entrypoint, the job's environment and the bundle's volume on the head container.
    """
    if not template.is_file():
        raise ConfigError(f"KubeRay template {template} does not exist (pass --template)")
    job = yaml.safe_load(template.read_text())
    if not isinstance(job, dict) or job.get("kind") != "RayJob":
        raise ConfigError(f"{template}: expected a RayJob manifest")
    name = job_id or new_job_id(bundle.name)
    items = bundle.file_items()
    size = sum(len(b) for _, b in items)
    if size > CONFIGMAP_LIMIT:
        raise ConfigError(
            f"the pipeline's local inputs are {size / 1e6:.1f} MB, over a ConfigMap's 1 MiB: put the sources on "
            "s3:// or gs:// (sources.N.path) or in the image"
        )
    data, binary, volume_items = {}, {}, []
    for rel, content in items:
        key = _configmap_key(rel)
        try:
            data[key] = content.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(content).decode()
        volume_items.append({"key": key, "path": rel})
    metadata = {"name": name, "labels": {"app": "distill-factory"}}
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
    configmap.update({"data": data} if data else {})
    configmap.update({"binaryData": binary} if binary else {})

    job = copy.deepcopy(job)
    job["metadata"] = {**job.get("metadata", {}), "name": name}
    job["spec"]["entrypoint"] = f"cd {KUBERAY_MOUNT} && {ENTRYPOINT}"
    job["spec"]["runtimeEnvYAML"] = yaml.safe_dump({"env_vars": job_env_vars()}, sort_keys=True)
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head.setdefault("volumes", []).append({"name": "factory-job", "configMap": {"name": name, "items": volume_items}})
    container = head["containers"][0]
    container.setdefault("volumeMounts", []).append({"name": "factory-job", "mountPath": KUBERAY_MOUNT})
    return yaml.dump_all([configmap, job], Dumper=_Dumper, sort_keys=False, allow_unicode=True)
