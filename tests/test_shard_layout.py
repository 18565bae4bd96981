"""Shards: Hugging Face layout, splits by problem, size-cut files with streaming row groups, the same
bytes for the same input, and a card whose header the Hub and `datasets` read.

Input rows are the 800 real completions of math_cot_100.jsonl with their grader labels as `accepted`
(the verify stage itself is covered by test_verify_and_shard.py).
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from factory.card import REQUIRED_KEYS
from factory.records import SFT_SCHEMA, VERIFIED_SCHEMA, table
from factory.stages.shard import split_of
from tests.conftest import MATH_COT


@lru_cache(maxsize=1)
def _math_cot_rows() -> tuple[dict, ...]:
    rows = []
    for line in MATH_COT.open():
        item = json.loads(line)
        for i, (completion, score) in enumerate(zip(item["code"], item["score"])):
            rows.append({"problem_id": f"math-{item['idx']}", "source": "math_cot_100", "domain": "math",
                         "problem": item["question"], "answer": item["answer"], "sample_idx": i,
                         "trace_key": f"math-{item['idx']}-{i}", "teacher": "Qwen2.5-Math-7B-Instruct",
                         "sampling": json.dumps({"n": 8}), "completion": completion, "accepted": bool(score),
                         "reject_reason": None if score else "math:wrong_answer"})
    return tuple(rows)


def math_cot_verified(shuffle_seed: int | None = None) -> pa.Table:
    rows = list(_math_cot_rows())
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    return table(rows, VERIFIED_SCHEMA)


def build_dataset(run_dir: Path, rows: pa.Table, **shard) -> dict:
    """run_shard on `rows` with shard.<key>=value settings; returns the stats entry."""
    from factory.config import load_config
    from factory.stages.shard import run_shard
    from factory.storage import RunDir

    overrides = [f"shard.{key}={json.dumps(value)}" for key, value in shard.items()]
    return run_shard(load_config(None, overrides, str(run_dir)), RunDir(str(run_dir)), rows)


def header_of(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def two_splits(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("shard") / "run"
    entry = build_dataset(run_dir, math_cot_verified(), splits={"train": 0.8, "test": 0.2}, max_rows_per_shard=150)
    return run_dir, entry


def test_datasets_loads_the_splits_with_their_features_and_rows(two_splits):
    import datasets

    run_dir, entry = two_splits
    accepted = [r for r in _math_cot_rows() if r["accepted"]]
    expected = {name: sum(split_of(r["problem_id"], {"train": 0.8, "test": 0.2}) == name for r in accepted)
                for name in ("train", "test")}
    assert expected["test"] > 0 and expected["train"] > 0

    ds = datasets.load_dataset(str(run_dir / "dataset"))
    assert {name: ds[name].num_rows for name in ds} == expected
    assert ds["train"].features == datasets.Features.from_arrow_schema(SFT_SCHEMA)
    assert entry["splits"]["train"]["rows"] == expected["train"] and entry["out"] == len(accepted)

    files = sorted(p.name for p in (run_dir / "dataset" / "data").iterdir())
    n = {name: -(-rows // 150) for name, rows in expected.items()}
    assert files == [f"{name}-{i:05d}-of-{n[name]:05d}.parquet" for name in ("test", "train") for i in range(n[name])]

    # Each row is the trace's prompt and its completion, verbatim.
    by_key = {r["trace_key"]: r for r in accepted}
    for row in ds["test"]:
        trace = by_key[row["trace_key"]]
        assert row["messages"] == [{"role": "user", "content": trace["problem"]},
                                   {"role": "assistant", "content": trace["completion"]}]
        assert (row["problem_id"], row["answer"], row["num_tokens"]) == (trace["problem_id"], trace["answer"], None)

    # No problem sits in two splits, and every problem with an accepted trace is in one.
    train, test = (set(ds[name]["problem_id"]) for name in ("train", "test"))
    assert not train & test
    assert train | test == {r["problem_id"] for r in accepted}


def test_card_header_has_what_the_hub_reads(two_splits):
    run_dir, entry = two_splits
    card = (run_dir / "dataset" / "README.md").read_text()
    header = header_of(card)
    assert all(header.get(key) for key in REQUIRED_KEYS)
    assert header["license"] == "mit" and header["task_categories"] == ["text-generation"]
    assert header["size_categories"] == ["n<1K"]
    assert header["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]}]
    info = header["dataset_info"]
    assert [f["name"] for f in info["features"]] == SFT_SCHEMA.names
    assert {s["name"]: (s["num_examples"], s["num_bytes"]) for s in info["splits"]} == {
        name: (s["rows"], s["num_bytes"]) for name, s in entry["splits"].items()}
    on_disk = sum(p.stat().st_size for p in (run_dir / "dataset" / "data").iterdir())
    assert info["download_size"] == on_disk == entry["download_bytes"]

    from huggingface_hub import DatasetCard

    assert DatasetCard(card, ignore_metadata_errors=False).data.pretty_name == "Distilled reasoning traces"


def test_card_shows_plots_that_exist(two_splits):
    run_dir, _ = two_splits
    card = (run_dir / "dataset" / "README.md").read_text()
    for name in ("sample_lengths.png", "pass_rates.png"):
        assert f"](plots/{name})" in card
        assert (run_dir / "dataset" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "characters of the assistant turn" in card  # these traces carry no token counts
    assert "| model | `Qwen2.5-Math-7B-Instruct` (" in card
    assert "| shard | 800 |" in card
    assert "**not** checked against benchmarks" in card  # no curate stage ran


def test_same_input_in_any_order_gives_the_same_bytes(tmp_path):
    settings = {"splits": {"train": 0.9, "test": 0.1}, "max_rows_per_shard": 120, "row_group_mb": 0.05}
    build_dataset(tmp_path / "a", math_cot_verified(), **settings)
    build_dataset(tmp_path / "b", math_cot_verified(shuffle_seed=7), **settings)
    a, b = (sorted((tmp_path / run / "dataset").rglob("*.p*")) for run in ("a", "b"))
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    assert len([p for p in a if p.suffix == ".parquet"]) > 2
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes(), x.name


def test_system_prompt_and_token_counts(tmp_path):
    rows = math_cot_verified().slice(0, 16)
    rows = rows.set_column(rows.schema.get_field_index("prompt_tokens"), "prompt_tokens", pa.array([7] * 16, pa.int32()))
    rows = rows.set_column(rows.schema.get_field_index("completion_tokens"), "completion_tokens",
                           pa.array([None] + [100] * 15, pa.int32()))
    build_dataset(tmp_path, rows, system_prompt="Think step by step.")
    got = pq.read_table(tmp_path / "dataset" / "data").to_pylist()
    assert [m["role"] for m in got[0]["messages"]] == ["system", "user", "assistant"]
    assert got[0]["messages"][0]["content"] == "Think step by step."
    assert {r["trace_key"]: r["num_tokens"] for r in got}["math-0-0"] == 7
    assert {r["num_tokens"] for r in got if r["trace_key"] != "math-0-0"} == {107}
    assert "tokens (prompt + completion)" in (tmp_path / "dataset" / "README.md").read_text()


def test_shards_are_cut_by_size_with_small_row_groups(tmp_path):
    target = 0.04  # MiB on disk; the whole dataset is about 0.2 MiB
    entry = build_dataset(tmp_path, math_cot_verified(), target_shard_mb=target, row_group_mb=0.02)
    files = sorted((tmp_path / "dataset" / "data").iterdir())
    assert len(files) == entry["shards"] > 2
    sizes = [f.stat().st_size for f in files]
    assert all(size >= target * 2**20 for size in sizes[:-1])  # a shard closes once it reaches the target
    metas = [pq.ParquetFile(f).metadata for f in files]
    assert all(m.num_row_groups >= 2 for m in metas[:-1])
    group_bytes = [m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups - 1)]
    assert max(group_bytes) <= 1.5 * 0.02 * 2**20  # row groups near row_group_mb (uncompressed), for streaming reads
    assert all(m.row_group(0).column(0).compression == "ZSTD" for m in metas)
    ids = pq.read_table(tmp_path / "dataset" / "data").column("problem_id").to_pylist()
    assert len(ids) == entry["out"] and ids == sorted(ids)  # one ordered sequence across the shards


def test_split_of_follows_the_shares_and_ignores_other_problems():
    shares = {"train": 0.98, "test": 0.02}
    ids = [f"problem-{i}" for i in range(20_000)]
    got = [split_of(pid, shares) for pid in ids]
    assert abs(got.count("test") / len(ids) - 0.02) < 0.005
    assert split_of("problem-5", shares) == got[5]  # a problem's split depends on its id alone
    assert {split_of(pid, {"train": 1.0}) for pid in ids[:100]} == {"train"}


def test_card_reports_curate_and_generation_cost(tmp_path):
    from factory import stats
    from factory.storage import RunDir

    run = RunDir(str(tmp_path))
    stats.record(run, "generate", {"in": 100, "out": 800, "seconds": 12.5,
                                    "tokens": {"prompt": 20_000, "completion": 400_000}, "gpu_hours": 0.25, "cost_usd": 1.5})
    stats.record(run, "curate", {
        "in": 796, "out": 500, "removed": {"dedup_response": 40, "decontaminated": 6},
        "decontamination": {"ngram": 13, "fields": ["problem"], "benchmarks": {
            "aime24": {"items": 30, "hits": 2, "examples": [
                {"problem_id": "math-3", "item_id": "aime24/7", "shared_ngrams": 9}]},
            "amc23": {"items": 40, "hits": 0, "examples": []}}},
        "mix": {"short": [{"mode": "reasoning", "domain": "math", "target": 600, "available": 500, "unit": "rows"}]},
    })
    # Curate's output: every kept row marked accepted, with the problem's pass rate.
    rows = math_cot_verified()
    rows = rows.set_column(rows.schema.get_field_index("accepted"), "accepted", pa.array([True] * rows.num_rows))
    rows = rows.append_column("pass_rate", pa.array([0.25 if i % 2 else 0.75 for i in range(rows.num_rows)]))
    entry = build_dataset(tmp_path, rows)
    assert entry["out"] == rows.num_rows
    from factory.stages.shard import problem_pass_rates

    assert sorted(set(problem_pass_rates(rows).to_pylist())) == [0.75]  # one per problem, from curate's column
    card = (tmp_path / "dataset" / "README.md").read_text()
    assert "| curate | `dedup_response` | 40 |" in card
    assert "| aime24 | 30 | 2 |" in card and "| amc23 | 40 | 0 |" in card and "item_id: aime24/7" in card
    assert "(ngram: 13, fields: [\"problem\"])" in card
    assert "available: 500" in card  # the mix report
    assert "| tokens.completion | 400000 |" in card and "| cost_usd | 1.5 |" in card and "| in | 100 |" not in card
    assert json.loads((tmp_path / "dataset" / "stats.json").read_text())["curate"]["out"] == 500


def test_nothing_accepted_gives_one_empty_shard(tmp_path):
    rows = math_cot_verified()
    rows = rows.set_column(rows.schema.get_field_index("accepted"), "accepted", pa.array([False] * rows.num_rows))
    entry = build_dataset(tmp_path, rows, splits={"train": 0.5, "test": 0.5})
    files = sorted(p.name for p in (tmp_path / "dataset" / "data").iterdir())
    assert files == ["train-00000-of-00001.parquet"] and entry["out"] == 0
    assert pq.read_table(tmp_path / "dataset" / "data" / files[0]).schema.equals(SFT_SCHEMA)
    assert header_of((tmp_path / "dataset" / "README.md").read_text())["dataset_info"]["splits"][0]["num_examples"] == 0


def test_user_turn_uses_the_prompt_template_of_the_rows_source(tmp_path):
    from factory.config import load_config
    from factory.stages.shard import run_shard
    from factory.storage import RunDir

    (tmp_path / "direct.txt").write_text("Answer briefly: {problem}")
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"),
        "sources": [{"name": "math_cot_100", "path": str(MATH_COT), "prompt_template": "direct.txt", "mode": "direct"}],
    }))
    cfg = load_config(tmp_path / "pipeline.yaml")
    run_shard(cfg, RunDir(cfg.run_dir), math_cot_verified().slice(0, 8))
    row = pq.read_table(tmp_path / "run" / "dataset" / "data").to_pylist()[0]
    problem = next(r["problem"] for r in _math_cot_rows() if r["trace_key"] == row["trace_key"])
    assert row["messages"][0] == {"role": "user", "content": f"Answer briefly: {problem}"}


def test_sort_buckets_do_not_show_in_the_files(tmp_path, monkeypatch):
    """Shard sorts out of core, a problem_id range at a time; how many ranges it took changes no byte."""
    from factory.stages import shard

    settings = {"splits": {"train": 0.7, "test": 0.3}, "max_rows_per_shard": 90, "row_group_mb": 0.03}
    one_entry = build_dataset(tmp_path / "one", math_cot_verified(), **settings)
    drained = []
    monkeypatch.setattr(shard, "BUCKET_BYTES", 40_000)  # the 800 rows are about 2 MB
    drain = shard.drain
    monkeypatch.setattr(shard, "drain", lambda path, *args: (drained.append(path), drain(path, *args)))
    many_entry = build_dataset(tmp_path / "many", math_cot_verified(shuffle_seed=3), **settings)
    assert len(drained) > 20
    one, many = (sorted((tmp_path / run / "dataset").rglob("*.p*")) for run in ("one", "many"))
    assert [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "many") for p in many]
    for x, y in zip(one, many):
        assert x.read_bytes() == y.read_bytes(), x.name
    cards = [header_of((tmp_path / run / "dataset/README.md").read_text()) for run in ("one", "many")]
    assert cards[0] == cards[1]
    assert {**one_entry, "seconds": 0} == {**many_entry, "seconds": 0}


def test_buckets_a_killed_shard_left_are_removed_by_the_next_run(tmp_path):
    from factory.stages.shard import scratch_dir
    from factory.storage import RunDir

    run_dir = tmp_path / "run"
    with scratch_dir(RunDir(str(run_dir))) as scratch:  # what a kill -9 mid-shard leaves behind
        pass
    Path(scratch).mkdir()
    (Path(scratch) / "bucket-00000.arrow").write_bytes(b"half-written")
    entry = build_dataset(run_dir, math_cot_verified())
    assert entry["out"] == sum(r["accepted"] for r in _math_cot_rows())
    assert not Path(scratch).exists()
