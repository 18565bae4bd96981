"""Sources (JSONL, Parquet, Hugging Face datasets) -> Problem or Trace rows.

A malformed row never stops the job: it is returned as a reject with its reason and where it came
from, and the caller writes it to the stage's rejects file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from factory.config import SourceConfig
from factory.errors import ConfigError, InputError
from factory.records import problem_id, trace_key
from factory.teacher.prompts import MODES

# Record field -> input columns tried in order, unless the source maps the field itself.
DEFAULT_FIELDS = {
    "problem": ("problem", "question"),
    "answer": ("answer",),
    "problem_id": ("problem_id",),
    "tests": ("tests",),
    "language": ("language",),
    "domain": ("domain",),
}
DOMAINS = {"math", "code", "science", "general"}
TEST_KINDS = {"stdio": ("cases",), "assert": ("code", "entry_point")}


class RowError(ValueError):
    """A row that cannot become a record; `str(e)` is the machine-readable reason."""


@dataclass
class Reject:
    source: str
    locator: str
    reason: str
    row: Any

    def to_json(self) -> str:
        raw = self.row if isinstance(self.row, (dict, str)) else repr(self.row)
        return json.dumps(
            {"source": self.source, "where": self.locator, "reason": self.reason, "row": raw},
            ensure_ascii=False,
            default=str,
        )


def source_name(src: SourceConfig) -> str:
    if src.name:
        return src.name
    if src.path:
        return Path(src.path).stem
    return str(src.hf.get("path", "hf"))


def _format_of(src: SourceConfig) -> str:
    if src.format:
        return src.format
    if src.hf is not None:
        return "hf"
    suffixes = Path(src.path).suffixes
    if ".parquet" in suffixes or Path(src.path).is_dir():
        return "parquet"
    if {".jsonl", ".json", ".ndjson"} & set(suffixes):
        return "jsonl"
    raise ConfigError(f"source {src.path}: cannot tell the format from the name; set format: jsonl|parquet|hf")


def read_raw(src: SourceConfig) -> Iterator[tuple[str, Any, str | None]]:
    """Yield (locator, raw row, error) for every input row; error is set when the row is unreadable."""
    fmt = _format_of(src)
    if fmt == "jsonl":
        yield from _read_jsonl(Path(src.path))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            tbl = pq.read_table(src.path)
        except Exception as e:  # an unreadable file is an input error, not a bad row
            raise InputError(f"cannot read Parquet {src.path}: {e}") from e
        for i, row in enumerate(tbl.to_pylist()):
            yield f"row {i}", row, None
    else:
        yield from _read_hf(src.hf)


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            where = f"line {lineno}"
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                yield where, line[:200].decode("utf-8", "replace"), "undecodable_text"
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                yield where, text[:2000], "bad_json"
                continue
            yield (where, row, None) if isinstance(row, dict) else (where, row, "not_an_object")


def _read_hf(args: dict) -> Iterator[tuple[str, Any, str | None]]:
    import datasets

    try:
        ds = datasets.load_dataset(**args)
    except Exception as e:
        raise InputError(f"datasets.load_dataset({args}) failed: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        raise ConfigError(f"source hf {args}: name a split (hf.split), one of {list(ds)}")
    for i, row in enumerate(ds):
        yield f"row {i}", row, None


def _pick(raw: dict, src: SourceConfig, field: str) -> Any:
    names = (src.fields[field],) if field in src.fields else DEFAULT_FIELDS.get(field, (field,))
    for name in names:
        if raw.get(name) is not None:
            return raw[name]
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError("bad_field_type")
    return str(value)


def _tests(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError("bad_tests") from None
    if not isinstance(value, dict) or value.get("kind") not in TEST_KINDS:
        raise RowError("bad_tests")
    if any(k not in value for k in TEST_KINDS[value["kind"]]):
        raise RowError("bad_tests")
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def to_problem(raw: dict, src: SourceConfig, name: str) -> dict:
    problem = _pick(raw, src, "problem")
    if problem is None and isinstance(raw.get("messages"), list):
        users = [m.get("content") for m in raw["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        problem = users[-1] if users else None
    if problem is None:
        raise RowError("missing_problem")
    if not isinstance(problem, str):
        raise RowError("bad_field_type")
    if not problem.strip():
        raise RowError("empty_problem")
    answer = _text(_pick(raw, src, "answer"))
    if answer is not None and src.answer_pattern:
        match = re.search(src.answer_pattern, answer, flags=re.S | re.M)
        if not match:
            raise RowError("answer_pattern_no_match")
        answer = match.group(1).strip()
    domain = _pick(raw, src, "domain") or src.domain
    if domain not in DOMAINS:
        raise RowError("unknown_domain")
    pid = _text(_pick(raw, src, "problem_id")) or problem_id(name, problem)
    return {
        "problem_id": pid,
        "source": name,
        "domain": domain,
        "problem": problem,
        "answer": answer,
        "tests": _tests(_pick(raw, src, "tests")),
        "language": _text(_pick(raw, src, "language")),
    }


def to_trace(raw: dict, src: SourceConfig, name: str, sample_counts: dict[str, int]) -> dict:
    """A finished trace brought from outside (`factory verify --input`): a problem plus its completion."""
    row = to_problem(raw, src, name)
    completion = raw.get("completion")
    if not isinstance(completion, str):
        raise RowError("missing_completion")
    pid = row["problem_id"]
    sample_idx = raw.get("sample_idx")
    if not isinstance(sample_idx, int):
        sample_idx = sample_counts.get(pid, 0)
    sample_counts[pid] = max(sample_counts.get(pid, 0), sample_idx + 1)
    teacher = raw.get("teacher") if isinstance(raw.get("teacher"), str) else "external"
    sampling = raw.get("sampling") if isinstance(raw.get("sampling"), str) else "{}"
    mode = raw.get("mode") or "reasoning"
    if mode not in MODES:
        raise RowError("unknown_mode")
    row.update(
        sample_idx=sample_idx,
        teacher=teacher,
        sampling=sampling,
        mode=mode,
        trace_key=raw.get("trace_key") or trace_key(pid, sample_idx, teacher, None, json.loads(sampling), mode),
        prompt=raw.get("prompt") if isinstance(raw.get("prompt"), str) else None,
        completion=completion,
        finish_reason=raw.get("finish_reason") if isinstance(raw.get("finish_reason"), str) else None,
        prompt_tokens=raw.get("prompt_tokens") if isinstance(raw.get("prompt_tokens"), int) else None,
        completion_tokens=raw.get("completion_tokens") if isinstance(raw.get("completion_tokens"), int) else None,
    )
    return row


def ingest(sources: list[SourceConfig], kind: str = "problem") -> tuple[list[dict], list[Reject]]:
    """Read every source; return good rows (unique by problem_id or trace_key) and rejects."""
    rows: list[dict] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    id_field = "problem_id" if kind == "problem" else "trace_key"
    for src in sources:
        name = source_name(src)
        sample_counts: dict[str, int] = {}
        taken = 0
        for where, raw, error in read_raw(src):
            if src.limit is not None and taken >= src.limit:
                break
            taken += 1
            if error:
                rejects.append(Reject(name, where, error, raw))
                continue
            try:
                row = to_problem(raw, src, name) if kind == "problem" else to_trace(raw, src, name, sample_counts)
            except RowError as e:
                rejects.append(Reject(name, where, str(e), raw))
                continue
            if row[id_field] in seen:
                rejects.append(Reject(name, where, f"duplicate_{id_field}", raw))
                continue
            seen.add(row[id_field])
            rows.append(row)
    return rows, rejects
