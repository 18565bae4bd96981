"""`factory curate` through the CLI on verify/ rows made from the 800 real completions of
math_cot_100.jsonl, with problems planted for each step: references hidden (majority vote), a
benchmark problem reworded (decontamination), a problem stated twice (dedup)."""

import json
import subprocess
import sys
from collections import Counter

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from factory.cli import app
from factory.config import JourneyConfig
from tests.conftest import SHARED_DATA
from tests.test_curate_parts import reword

runner = CliRunner()
EVAL = SHARED_DATA / "qwen25_math_eval"
HIDDEN = 5  # every 5th problem loses its reference answer


@pytest.fixture(scope="module")
def curated(tmp_path_factory, math_cot_traces):
    traces, _ = math_cot_traces
    rows = [json.loads(line) for line in traces.open()]
    refs = {r["problem_id"]: r["answer"] for r in rows}
    aime = json.loads((EVAL / "aime24" / "test.jsonl").open().readline())
    planted = []
    for r in rows:
        if int(r["problem_id"].split("-")[1]) % HIDDEN == 0:
            r["answer"] = None
        if r["problem_id"] == "math-1":  # the same traces, under a reworded AIME 2024 problem
            planted.append({**r, "problem_id": "plant-aime", "problem": reword(aime["problem"])})
        if r["problem_id"] == "math-2":  # one problem stated twice
            planted.append({**r, "problem_id": "dup-2"})
        if r["problem_id"] == "math-4":  # the same problem again, answered in the other mode: not a duplicate
            planted.append({**r, "problem_id": "direct-4", "mode": "direct"})
    tmp = tmp_path_factory.mktemp("curate")
    inputs = tmp / "traces.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows + planted))
    run_dir = tmp / "run"
    result = runner.invoke(app, ["verify", "--input", str(inputs), "--run-dir", str(run_dir), "--set", "verify.require_think=false"])
    assert result.exit_code == 0, result.output

    pipeline = tmp / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({
        "curate": {
            "decontaminate": {"benchmarks": [str(EVAL / "aime24"), {"path": str(EVAL / "amc23" / "test.jsonl")}]},
            "select": {"per_problem": 4, "rule": "shortest"},
            "majority_vote": {"min_share": 0.5, "min_votes": 3},
            "journey": {"enabled": True},
            "mix": {"targets": {"direct": 50}},
        }
    }))
    result = runner.invoke(app, ["curate", "-p", str(pipeline), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir, pipeline, refs, result.output


def _read(run_dir, stage):
    return pq.read_table(run_dir / stage).to_pylist()


def test_curated_rows_are_marked_and_capped_per_problem(curated):
    run_dir, _, _, _ = curated
    rows = _read(run_dir, "curate")
    verified = _read(run_dir, "verify")
    assert rows and all(r["accepted"] and r["reject_reason"] is None for r in rows)
    assert {r["problem_id"] for r in rows if r["mode"] == "direct"} == {"direct-4"}
    per_problem = Counter(r["problem_id"] for r in rows if not r["journey"])
    assert max(per_problem.values()) == 4
    # pass_rate: the share of the problem's samples that were right (verify, or the vote for hidden ones).
    for r in rows:
        if not r["pseudo_label"]:
            samples = [v for v in verified if v["problem_id"] == r["problem_id"]]
            assert r["pass_rate"] == sum(v["accepted"] for v in samples) / len(samples)
    # "shortest": each problem keeps its shortest accepted traces that are not duplicates of a kept one.
    kept = {r["trace_key"] for r in rows}
    dups = {r["trace_key"] for r in map(json.loads, (run_dir / "rejects" / "curate.jsonl").open()) if "dup" in r["reason"]}
    for pid in ("math-3", "math-4", "math-8"):
        ok = sorted((v for v in verified if v["problem_id"] == pid and v["accepted"] and v["trace_key"] not in dups),
                    key=lambda v: (len(v["completion"]), v["trace_key"]))
        assert {v["trace_key"] for v in ok[:4]} == {k for k in kept if k in {v["trace_key"] for v in ok}}


def test_hidden_references_become_pseudo_labels(curated):
    run_dir, _, refs, _ = curated
    from verifiers import check_math

    rows = _read(run_dir, "curate")
    labelled = {r["problem_id"]: r["answer"] for r in rows if r["pseudo_label"]}
    assert all(int(pid.split("-")[1]) % HIDDEN == 0 for pid in labelled)
    wrong = sorted(pid for pid, label in labelled.items() if not check_math(f"\\boxed{{{label}}}", refs[pid]).passed)
    # 19 of the 20 hidden problems get a label; on math-70 five of eight samples agree on 19 (the reference is 31).
    assert len(labelled) == 19 and wrong == ["math-70"]
    stats = json.loads((run_dir / "stats.json").read_text())["curate"]
    assert stats["majority_vote"]["labelled"] == 19 and stats["majority_vote"]["no_majority"] == 1


def test_reworded_benchmark_problem_is_removed_and_recorded(curated):
    run_dir, _, _, _ = curated
    rows = _read(run_dir, "curate")
    assert "plant-aime" not in {r["problem_id"] for r in rows}
    hits = [json.loads(line) for line in (run_dir / "curate" / "_contamination.jsonl").open()]
    assert [(h["problem_id"], h["benchmark"], h["item_id"]) for h in hits] == [("plant-aime", "aime24", "60")]
    deco = json.loads((run_dir / "stats.json").read_text())["curate"]["decontamination"]
    assert deco["benchmarks"]["aime24"]["hits"] == 1 and deco["benchmarks"]["amc23"]["hits"] == 0
    assert deco["benchmarks"]["aime24"]["items"] == 30
    assert deco["benchmarks"]["aime24"]["examples"][0]["item_id"] == "60"


def test_problem_stated_twice_keeps_one_copy(curated):
    run_dir, _, _, _ = curated
    pids = {r["problem_id"] for r in _read(run_dir, "curate")}
    assert ("math-2" in pids) != ("dup-2" in pids)
    stats = json.loads((run_dir / "stats.json").read_text())["curate"]
    assert stats["dedup"]["problems"]["exact"] == 1
    assert {"math-4", "direct-4"} <= pids  # one problem in two modes is two samples, not a duplicate


def test_journey_samples_correct_a_wrong_attempt(curated):
    run_dir, _, refs, _ = curated
    from verifiers import check_math

    rows = _read(run_dir, "curate")
    journeys = [r for r in rows if r["journey"]]
    verified = {(v["problem_id"], v["reject_reason"]) for v in _read(run_dir, "verify")}
    with_wrong = {pid for pid, reason in verified if reason == "math:wrong_answer"}
    assert journeys and {r["problem_id"] for r in journeys} <= with_wrong
    for r in journeys:
        assert any(marker in r["completion"] for marker in JourneyConfig().markers)
        assert check_math(r["completion"], refs[r["problem_id"]]).passed is True


def test_counts_add_up_and_shortfalls_are_reported(curated):
    run_dir, _, _, output = curated
    stats = json.loads((run_dir / "stats.json").read_text())["curate"]
    rows = _read(run_dir, "curate")
    assert stats["out"] == len(rows)
    assert stats["in"] - (stats["out"] - stats["journey"]["samples"]) == sum(stats["rejected"].values())
    rejects = [json.loads(line) for line in (run_dir / "rejects" / "curate.jsonl").open()]
    assert Counter(r["reason"] for r in rejects) == Counter(stats["rejected"])
    assert {"selection", "contaminated", "exact_dup_problem"} <= set(stats["rejected"])
    direct = sum(r["mode"] == "direct" for r in rows)
    assert stats["mix"]["short"] == [{"mode": "direct", "domain": "*", "unit": "rows", "target": 50,
                                      "available": direct, "taken": direct, "short_by": 50 - direct}]
    assert "mix target direct/* fell short" in output


def test_rerun_skips_and_shard_reads_curate(curated):
    import datasets

    run_dir, pipeline, _, _ = curated
    again = runner.invoke(app, ["curate", "-p", str(pipeline), "--run-dir", str(run_dir)])
    assert again.exit_code == 0 and "already done" in again.output
    rows = _read(run_dir, "curate")
    result = runner.invoke(app, ["shard", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    ds = datasets.load_dataset(str(run_dir / "dataset"), split="train")
    assert ds.num_rows == len(rows)
    assert set(ds["trace_key"]) == {r["trace_key"] for r in rows}
    # A changed setting makes curate run again (here: a mix target that trims the set).
    changed = runner.invoke(app, ["curate", "-p", str(pipeline), "--run-dir", str(run_dir), "--set", "curate.mix.targets.reasoning=1",
                                  "--set", "curate.dedup.responses=false"])
    assert changed.exit_code == 0 and "already done" not in changed.output, changed.output
    assert sum(r["mode"] == "reasoning" for r in _read(run_dir, "curate")) == 1


def test_bad_curate_setting_fails_before_ray_starts(tmp_path):
    code = (
        "import sys; from typer.testing import CliRunner; from factory.cli import app;"
        "r = CliRunner().invoke(app, ['curate', '--run-dir', sys.argv[1], '--set', 'curate.select.rule=best']);"
        "print(r.output); print('ray' in sys.modules); sys.exit(r.exit_code)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "curate.select.rule" in proc.stdout
    assert proc.stdout.strip().endswith("False")


def test_missing_benchmark_file_is_named(tmp_path):
    result = runner.invoke(app, ["curate", "--run-dir", str(tmp_path), "--set", "curate.decontaminate.benchmarks=[nope.jsonl]"])
    assert result.exit_code == 2 and "curate.decontaminate.benchmarks.0.path" in result.output


def test_shard_refuses_a_curate_made_from_an_older_verify(tmp_path):
    from factory.errors import InputError
    from factory.pipeline import shard_input
    from factory.storage import RunDir

    run = RunDir(str(tmp_path))
    assert shard_input(run) == "verify"  # no curate stage: shard takes verify's accepted rows
    run.mark_done("verify", "v1")
    run.mark_done("curate", "c1")
    run.write_text("curate/_UPSTREAM", "v1")
    assert shard_input(run) == "curate"
    run.mark_done("verify", "v2")  # verify was redone after curate
    with pytest.raises(InputError, match="older verify"):
        shard_input(run)


def test_r1_pipeline_file_documents_a_full_run():
    from factory.config import STAGES, load_config
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "pipelines" / "r1_distill.yaml")
    assert cfg.stages == ["generate", "verify", "curate", "shard"]
    assert STAGES.index("verify") < STAGES.index("curate") < STAGES.index("shard")
    assert {b.name for b in cfg.curate.decontaminate.benchmarks} >= {"math500", "aime24"}
    assert cfg.curate.mix.targets == {"reasoning": {"math": 600000}, "direct": 200000}


def test_curate_from_input_file(curated, tmp_path):
    run_dir, _, _, _ = curated
    verified = pq.read_table(run_dir / "verify")
    part = tmp_path / "verified.parquet"
    pq.write_table(verified.slice(0, 80), part)
    out = tmp_path / "out"
    result = runner.invoke(app, ["curate", "--input", str(part), "--run-dir", str(out), "--set", "curate.select.per_problem=1"])
    assert result.exit_code == 0, result.output
    rows = _read(out, "curate")
    given = verified.slice(0, 80).to_pylist()
    pids = [r["problem_id"] for r in rows]
    assert len(pids) == len(set(pids))  # one trace per problem
    # every problem with an accepted trace, plus hidden-reference ones the vote labelled
    assert {r["problem_id"] for r in given if r["accepted"]} <= set(pids) <= {r["problem_id"] for r in given}
    pq.write_table(verified.drop_columns(["verdict_math"]), part)
    bad = runner.invoke(app, ["curate", "--input", str(part), "--run-dir", str(out)])
    assert bad.exit_code == 2 and "verdict_math" in bad.output
