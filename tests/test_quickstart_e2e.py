"""The quickstart pipeline end to end on the real vLLM engine (CPU build) with a tiny random model."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.records import TRACE_SCHEMA, VERIFIED_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipelines" / "quickstart.yaml"
N_PROBLEMS = sum(1 for _ in (ROOT / "pipelines/data/quickstart_problems.jsonl").open())

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, tiny_qwen2):
    run_dir = tmp_path_factory.mktemp("quickstart")
    args = ["run", str(PIPELINE), "--run-dir", str(run_dir), "--set", f"teacher.model={tiny_qwen2}",
            "--set", "teacher.sampling.max_tokens=48"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run_dir, args, result.output


def test_every_problem_gets_n_traces(quickstart_run):
    run_dir, _, _ = quickstart_run
    table = pq.read_table(run_dir / "generate")
    assert table.schema.equals(TRACE_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    assert len(rows) == N_PROBLEMS * 2
    assert len({r["trace_key"] for r in rows}) == len(rows)
    assert sorted(r["sample_idx"] for r in rows) == [0, 1] * N_PROBLEMS or {r["sample_idx"] for r in rows} == {0, 1}
    for r in rows:
        assert r["error"] is None and r["completion"].startswith("<think>\n")
        assert r["prompt"].endswith("<|im_start|>assistant\n<think>\n")
        assert "\\boxed{}" in r["prompt"]  # the prompt template of the pipeline file
        assert 0 < r["completion_tokens"] <= 48 and r["prompt_tokens"] > 0
        assert r["finish_reason"] == ("length" if r["completion_tokens"] == 48 else "stop")
        assert json.loads(r["sampling"]) == {"n": 2, "temperature": 0.6, "top_p": 0.95, "max_tokens": 48}


def test_verify_shard_stats_and_card(quickstart_run):
    run_dir, _, output = quickstart_run
    verified = pq.read_table(run_dir / "verify")
    assert verified.schema.equals(VERIFIED_SCHEMA, check_metadata=False)
    stats = json.loads((run_dir / "stats.json").read_text())
    assert list(stats) == ["ingest", "generate", "verify", "shard"]
    assert stats["ingest"] == {**stats["ingest"], "in": N_PROBLEMS, "out": N_PROBLEMS}
    assert stats["generate"]["out"] == stats["verify"]["in"] == N_PROBLEMS * 2
    assert stats["shard"]["out"] == stats["verify"]["out"] == sum(verified.column("accepted").to_pylist())
    # Random weights rarely close a think block; every rejection must still carry its reason.
    assert sum(stats["verify"]["rejected"].values()) == N_PROBLEMS * 2 - stats["verify"]["out"]
    card = (run_dir / "dataset" / "README.md").read_text()
    assert str(run_dir) not in card and "| temperature | 0.6 |" in card
    assert list((run_dir / "dataset" / "data").glob("train-00000-of-00001.parquet"))
    assert "run directory:" in output and "generate" in output


def test_rerun_resumes_without_regenerating(quickstart_run):
    run_dir, args, _ = quickstart_run
    parts_before = sorted(p.name for p in (run_dir / "generate").glob("*.parquet"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"{N_PROBLEMS * 2}/{N_PROBLEMS * 2} traces already on disk, 0 to write" in result.output
    assert "verify: already done" in result.output and "shard: already done" in result.output
    assert sorted(p.name for p in (run_dir / "generate").glob("*.parquet")) == parts_before
