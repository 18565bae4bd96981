"""`factory submit | status | logs | stop` against a real Ray head started with `ray start` (token auth on,
as Ray 2.60 has it by default), and the bundle a job carries. The verify + shard pipeline here needs no
engine; the quickstart job with the engine is in test_two_nodes.py."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from factory import jobs
from factory.cli import app
from factory.config import SourceConfig, load_config
from factory.ingest import ingest
from factory.records import TRACE_SCHEMA, table
from factory.stages.verify import verify_rows
from factory.storage import RunDir
from tests.conftest import MATH_COT
from tests.local_ray import LocalCluster, free_port

ROOT = Path(__file__).resolve().parent.parent
FACTORY = [sys.executable, "-m", "factory.cli"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """A pipeline file in its own folder, reading a relative prompt template; traces of 8 real problems."""
    folder = tmp_path_factory.mktemp("pipeline")
    (folder / "prompts").mkdir()
    (folder / "prompts" / "solve.txt").write_text("Solve, and box the answer: {problem}")
    with (folder / "traces.jsonl").open("w") as f:
        for line in MATH_COT.open().readlines()[:8]:
            row = json.loads(line)
            for i, completion in enumerate(row["code"][:2]):
                f.write(json.dumps({"problem_id": f"math-{row['idx']}", "problem": row["question"],
                                    "answer": row["answer"], "completion": completion, "sample_idx": i}) + "\n")
    path = folder / "verify_shard.yaml"
    path.write_text(yaml.safe_dump({
        "run_dir": "runs/here",
        "stages": ["verify", "shard"],
        "sources": [{"path": "traces.jsonl"}],
        "teacher": {"prompt_template": "prompts/solve.txt"},
        "verify": {"require_think": False},
    }))
    return path


def _traces(pipeline: Path) -> list[dict]:
    rows, rejects = ingest([SourceConfig(path=str(pipeline.parent / "traces.jsonl"))], "trace")
    assert not rejects
    return rows


def _run_dir_with_traces(pipeline: Path, run_dir: Path) -> Path:
    """A run whose generate stage is done (the real traces), as one resumed on a cluster would be."""
    RunDir(str(run_dir)).write_part("generate", table(_traces(pipeline), TRACE_SCHEMA))
    return run_dir


# --- the bundle and the runtime environment: no cluster needed ---
def test_bundle_carries_the_settings_after_set_and_every_relative_input(pipeline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundle = jobs.job_bundle(pipeline, ["verify.math.timeout_s=7"])
    assert bundle.cfg.run_dir == str(tmp_path / "runs" / "here")  # resolved where the user stands
    assert sorted(bundle.files) == ["inputs/0-traces.jsonl", "inputs/1-solve.txt"]
    written = bundle.write(tmp_path / "bundle")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the job's cwd is the bundle, but paths must not depend on the caller's
    job_cfg = load_config(written / "pipeline.yaml")
    assert job_cfg.verify.math.timeout_s == 7 and job_cfg.run_dir == bundle.cfg.run_dir
    assert Path(job_cfg.sources[0].path).read_bytes() == (pipeline.parent / "traces.jsonl").read_bytes()
    assert Path(job_cfg.teacher.prompt_template).read_text() == "Solve, and box the answer: {problem}"


def test_a_bad_pipeline_fails_before_any_cluster_is_contacted(pipeline):
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["submit", str(pipeline), "--set", "verify.nope=1", "--address", nowhere])
    assert result.exit_code == 2
    assert "verify.nope: unknown key" in result.output


def test_runtime_env_ships_the_packages_and_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-shipped")
    monkeypatch.setenv("HF_TOKEN", "never-shipped")
    env = jobs.runtime_env(tmp_path)
    assert env["working_dir"] == str(tmp_path)
    assert [Path(p).name for p in env["py_modules"]] == ["factory", "verifiers", "data_cards"]
    assert all((Path(p) / "__init__.py").is_file() for p in env["py_modules"])
    assert env["env_vars"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert "never-shipped" not in json.dumps(env) and "pip" not in env

    pip = jobs.runtime_env(tmp_path, pip=True, extra="gpu")["pip"]
    names = {r.split(">")[0].split("=")[0].split("[")[0] for r in pip}
    assert {"math-verify", "pydantic", "vllm"} <= names and "ray" not in names


def test_token_auth_is_turned_on_when_a_token_is_at_hand(tmp_path):
    """In a fresh process, as the CLI runs: RAY_AUTH_MODE unset, a token in RAY_AUTH_TOKEN_PATH."""
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef")
    code = (
        "from factory import jobs; jobs._enable_token_auth(); import os; "
        "from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled as h; "
        "print(os.environ['RAY_AUTH_MODE'], sorted(h({}).items()) == [('authorization', 'Bearer ' + open(%r).read())])"
    ) % str(token)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "RAY_AUTH_TOKEN_PATH": str(token)},
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.split() == ["token", "True"], out.stderr


def test_an_unreachable_dashboard_is_a_clear_error():
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["status", "factory-x", "--address", nowhere])
    assert result.exit_code == 2
    assert f"cannot reach the Ray dashboard at {nowhere}" in result.output


# --- a real head ---
@pytest.fixture(scope="module")
def head():
    cluster = LocalCluster().start_head(num_cpus=2)
    try:
        yield cluster
    finally:
        cluster.stop()


def _factory(head, *args, env: dict | None = None, timeout: int = 420) -> subprocess.CompletedProcess:
    return subprocess.run([*FACTORY, *args, "--address", head.dashboard], env={**head.env, **(env or {})},
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_submitted_job_succeeds_with_the_local_verdicts(head, pipeline, tmp_path):
    run_dir = _run_dir_with_traces(pipeline, tmp_path / "run")
    done = _factory(head, "submit", str(pipeline), "--run-dir", str(run_dir), "--follow")
    assert done.returncode == 0, done.stderr[-3000:]
    job_id = done.stdout.splitlines()[0]
    assert job_id.startswith("factory-verify-shard-")
    assert f"dashboard: {head.dashboard}/#/jobs/{job_id}" in done.stderr
    assert "carrying" in done.stderr and "inputs/1-solve.txt" in done.stderr
    assert f"job {job_id}: SUCCEEDED" in done.stdout
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    assert token not in done.stdout + done.stderr

    # The same verdicts as the verifiers give here, row for row.
    settings = load_config(pipeline).verify
    expected = verify_rows(_traces(pipeline), settings)
    accepted = sorted(r["trace_key"] for r in expected if r["accepted"])
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["verify"]["in"] == len(expected) and stats["verify"]["out"] == len(accepted) > 0
    assert stats["shard"]["out"] == len(accepted)
    shard = pq.read_table(run_dir / "dataset" / "data").to_pylist()
    assert sorted(r["trace_key"] for r in shard) == accepted
    # The job's log holds the stage progress and the summary; status shows the run's counts.
    log = _factory(head, "logs", job_id)
    assert f"verify: {len(accepted)} of {len(expected)} traces accepted" in log.stdout
    status = _factory(head, "status", job_id)
    assert f"job {job_id}: SUCCEEDED" in status.stdout
    assert f"run directory: {run_dir}" in status.stdout and "verify" in status.stdout


def test_stop_ends_a_running_job(head, pipeline, tmp_path):
    run_dir = _run_dir_with_traces(pipeline, tmp_path / "run")
    submitted = _factory(head, "submit", str(pipeline), "--run-dir", str(run_dir))
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = submitted.stdout.strip()
    stopped = _factory(head, "stop", job_id)
    assert stopped.returncode == 0 and f"job {job_id}: stop requested" in stopped.stdout
    deadline = time.monotonic() + 120
    while (status := _factory(head, "status", job_id).stdout) and "STOPPED" not in status:
        assert "RUNNING" in status or "PENDING" in status, status
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert not (run_dir / "verify" / "_SUCCESS").exists()


def test_a_client_without_the_token_is_refused_clearly(head):
    denied = _factory(head, "status", "factory-x", env={"RAY_AUTH_MODE": "disabled"})
    assert denied.returncode == 2
    assert "error:" in denied.stderr and "Traceback" not in denied.stderr


def test_an_unknown_job_is_a_clear_error(head):
    missing = _factory(head, "status", "factory-no-such-job")
    assert missing.returncode == 2
    assert "factory-no-such-job" in missing.stderr and "Traceback" not in missing.stderr
