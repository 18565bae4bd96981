import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory.config import SourceConfig
from factory.ingest import ingest
from factory.records import problem_id

GSM8K = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def _jsonl(path: Path, lines: list) -> Path:
    with path.open("wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else (json.dumps(line) if not isinstance(line, str) else line).encode())
            f.write(b"\n")
    return path


def test_malformed_rows_are_set_aside_with_reasons(tmp_path):
    good = {"problem": "What is 1+1?", "answer": "2"}
    path = _jsonl(
        tmp_path / "p.jsonl",
        [
            good,
            "{not json",
            b"\xff\xfe broken bytes",
            [1, 2],
            {"answer": "3"},
            {"problem": "   "},
            {"problem": "x", "tests": {"kind": "stdio"}},
            {"problem": "y", "tests": "not json"},
            {"problem": "z", "domain": "poetry"},
            {"problem": {"nested": True}},
            good,
            {"question": "What is 2+2?", "answer": 4, "tests": {"kind": "assert", "code": "def check(f): pass", "entry_point": "f"}},
        ],
    )
    rows, rejects = ingest([SourceConfig(path=str(path))])
    assert [r["problem"] for r in rows] == ["What is 1+1?", "What is 2+2?"]
    assert rows[1]["answer"] == "4" and json.loads(rows[1]["tests"])["kind"] == "assert"
    assert [(r.locator, r.reason) for r in rejects] == [
        ("line 2", "bad_json"),
        ("line 3", "undecodable_text"),
        ("line 4", "not_an_object"),
        ("line 5", "missing_problem"),
        ("line 6", "empty_problem"),
        ("line 7", "bad_tests"),
        ("line 8", "bad_tests"),
        ("line 9", "unknown_domain"),
        ("line 10", "bad_field_type"),
        ("line 11", "duplicate_problem_id"),
    ]
    assert all(json.loads(r.to_json())["source"] == "p" for r in rejects)


def test_problem_id_is_stable_and_source_scoped():
    assert problem_id("gsm8k", "abc") == problem_id("gsm8k", "abc")
    assert problem_id("gsm8k", "abc") != problem_id("math", "abc")


def test_gsm8k_answers_through_a_pattern_and_field_map():
    src = SourceConfig(path=str(GSM8K), fields={"problem": "question"}, answer_pattern=r"####\s*(.+)$", limit=50)
    rows, rejects = ingest([src])
    assert len(rows) == 50 and not rejects
    assert rows[0]["answer"] == "18"  # Janet's ducks
    assert all(r["answer"].replace(",", "").lstrip("-").isdigit() for r in rows)


def test_parquet_and_hf_sources(tmp_path):
    table = pa.Table.from_pylist([{"q": f"What is {i}+{i}?", "a": str(2 * i), "id": f"p{i}"} for i in range(5)])
    pq.write_table(table, tmp_path / "p.parquet")
    fields = {"problem": "q", "answer": "a", "problem_id": "id"}
    rows, _ = ingest([SourceConfig(path=str(tmp_path / "p.parquet"), fields=fields)])
    assert [r["problem_id"] for r in rows] == [f"p{i}" for i in range(5)]
    jsonl = _jsonl(tmp_path / "hf.jsonl", table.to_pylist())
    hf = SourceConfig(name="local-hf", hf={"path": "json", "data_files": str(jsonl), "split": "train"}, fields=fields)
    rows_hf, _ = ingest([hf])
    assert [r["answer"] for r in rows_hf] == ["0", "2", "4", "6", "8"] and rows_hf[0]["source"] == "local-hf"


def test_traces_get_keys_and_sample_indices(tmp_path):
    path = _jsonl(
        tmp_path / "t.jsonl",
        [
            {"problem": "p", "answer": "1", "completion": "a"},
            {"problem": "p", "answer": "1", "completion": "b"},
            {"problem": "p", "answer": "1"},
        ],
    )
    rows, rejects = ingest([SourceConfig(path=str(path))], kind="trace")
    assert [r["sample_idx"] for r in rows] == [0, 1]
    assert len({r["trace_key"] for r in rows}) == 2
    assert [r.reason for r in rejects] == ["missing_completion"]


def test_hf_dataset_dict_needs_a_split(tmp_path):
    from factory.errors import ConfigError

    jsonl = _jsonl(tmp_path / "x.jsonl", [{"problem": "p"}])
    with pytest.raises(ConfigError, match="hf.split"):
        ingest([SourceConfig(hf={"path": "json", "data_files": str(jsonl)})])
