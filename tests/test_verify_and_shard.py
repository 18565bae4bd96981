"""`factory verify` and `factory shard` through the CLI on the real completions of math_cot_100.jsonl."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from factory.cli import app
from factory.records import VERIFIED_SCHEMA

runner = CliRunner()


@pytest.fixture(scope="module")
def verified_run(tmp_path_factory, math_cot_traces):
    traces, labels = math_cot_traces
    run_dir = tmp_path_factory.mktemp("run")
    result = runner.invoke(
        app, ["verify", "--input", str(traces), "--run-dir", str(run_dir), "--set", "verify.require_think=false"]
    )
    assert result.exit_code == 0, result.output
    return run_dir, labels


def test_accepted_matches_the_grader_labels(verified_run):
    run_dir, labels = verified_run
    rows = pq.read_table(run_dir / "verify").to_pylist()
    assert len(rows) == 800
    disagree = [r for r in rows if r["accepted"] != labels[(r["problem_id"], r["sample_idx"])]]
    assert (800 - len(disagree)) / 800 >= 0.99
    # The math verdict alone differs once, where the file's label is wrong: "10{,}000" is 10000.
    math_disagree = [r for r in rows if r["verdict_math"]["passed"] != labels[(r["problem_id"], r["sample_idx"])]]
    assert [(r["answer"], r["verdict_math"]["extracted"]) for r in math_disagree] == [("10{,}000", "10000")]
    # The rest are right answers whose text degenerates into several scripts: R1's language filter.
    for r in disagree:
        if r not in math_disagree:
            assert r["reject_reason"] == "language:mixed_language" and r["verdict_language"]["score"] < 0.6


def test_verified_rows_carry_verdicts_and_reasons(verified_run):
    run_dir, _ = verified_run
    table = pq.read_table(run_dir / "verify")
    assert table.schema.equals(VERIFIED_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    rejected = [r for r in rows if not r["accepted"]]
    assert rejected and {r["reject_reason"] for r in rejected} == {"math:wrong_answer", "language:mixed_language"}
    assert all(r["reject_reason"] is None for r in rows if r["accepted"])
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["verify"]["in"] == 800
    assert stats["verify"]["out"] == sum(r["accepted"] for r in rows)
    assert sum(stats["verify"]["rejected"].values()) == len(rejected)
    assert stats["verify"]["verdicts"]["language"]["fail"] == stats["verify"]["rejected"]["language:mixed_language"]
    assert stats["verify"]["verdicts"]["math"]["pass"] == sum(r["verdict_math"]["passed"] for r in rows)


def test_rerun_with_same_settings_skips_and_changed_settings_redo(verified_run, math_cot_traces):
    run_dir, _ = verified_run
    args = ["verify", "--input", str(math_cot_traces[0]), "--run-dir", str(run_dir)]
    again = runner.invoke(app, args + ["--set", "verify.require_think=false"])
    assert "already done" in again.output
    strict = runner.invoke(app, args)  # require_think defaults to true: these completions have none
    assert strict.exit_code == 0, strict.output
    rows = pq.read_table(run_dir / "verify").to_pylist()
    assert not any(r["accepted"] for r in rows)
    assert {r["reject_reason"] for r in rows} == {"format:no_think_block"}
    restore = runner.invoke(app, args + ["--set", "verify.require_think=false"])
    assert restore.exit_code == 0 and "already done" not in restore.output


def test_shard_writes_a_dataset_that_datasets_loads(verified_run):
    import datasets

    run_dir, _ = verified_run
    result = runner.invoke(app, ["shard", "--run-dir", str(run_dir), "--set", "shard.max_rows_per_shard=300"])
    assert result.exit_code == 0, result.output
    accepted = sum(r["accepted"] for r in pq.read_table(run_dir / "verify").to_pylist())
    files = sorted(p.name for p in (run_dir / "dataset" / "data").iterdir())
    n = -(-accepted // 300)
    assert files == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]

    ds = datasets.load_dataset(str(run_dir / "dataset"), split="train")
    assert ds.num_rows == accepted
    row = ds[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][1]["content"]  # the completion, verbatim
    assert row["num_tokens"] is None  # these traces came without token counts

    card = (run_dir / "dataset" / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"][0] == {"split": "train", "path": "data/train-*"}
    assert header["dataset_info"]["splits"][0]["num_examples"] == accepted
    assert "| verify | 800 |" in card and "math:wrong_answer" in card


def test_inspect_shows_stats_and_samples(verified_run):
    run_dir, _ = verified_run
    result = runner.invoke(app, ["inspect", str(run_dir), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert "verify" in result.output and "assistant:" in result.output


def test_bad_config_fails_before_ray_starts(tmp_path):
    code = (
        "import sys; from typer.testing import CliRunner; from factory.cli import app;"
        "r = CliRunner().invoke(app, ['verify', '--run-dir', sys.argv[1], '--set', 'verify.bogus=1']);"
        "print(r.output); print('ray' in sys.modules); sys.exit(r.exit_code)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "verify.bogus: unknown key" in proc.stdout
    assert proc.stdout.strip().endswith("False")  # ray was never imported


def test_help_does_not_import_heavy_packages():
    code = "import sys; from factory.cli import app; print(sorted({'ray','vllm','torch','transformers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_shard_from_input_redoes_when_the_input_changes(verified_run, tmp_path):
    import pyarrow.compute as pc

    run_dir, _ = verified_run
    verified = pq.read_table(run_dir / "verify")
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(verified, first)
    # Same number of rows and schema, but nothing accepted.
    pq.write_table(verified.set_column(verified.schema.get_field_index("accepted"), "accepted",
                                       pc.and_(verified.column("accepted"), False)), second)
    out = tmp_path / "out"
    assert runner.invoke(app, ["shard", "--input", str(first), "--run-dir", str(out)]).exit_code == 0
    result = runner.invoke(app, ["shard", "--input", str(second), "--run-dir", str(out)])
    assert result.exit_code == 0 and "already done" not in result.output
    assert pq.read_table(out / "dataset" / "data").num_rows == 0
