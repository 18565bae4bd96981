"""The data contracts of ../shared/DESIGN.md as Arrow schemas, and the ids that make rows addressable.

`tests` (whose shape depends on its kind) and `sampling` are stored as JSON strings so that every
part file of a stage has one fixed schema.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

VERDICT_TYPE = pa.struct(
    [("passed", pa.bool_()), ("reason", pa.string()), ("score", pa.float64()), ("extracted", pa.string())]
)

PROBLEM_FIELDS = [
    ("problem_id", pa.string()),
    ("source", pa.string()),
    ("domain", pa.string()),
    ("problem", pa.string()),
    ("answer", pa.string()),
    ("tests", pa.string()),
    ("language", pa.string()),
]
PROBLEM_SCHEMA = pa.schema(PROBLEM_FIELDS)

TRACE_FIELDS = PROBLEM_FIELDS + [
    ("sample_idx", pa.int32()),
    ("trace_key", pa.string()),
    ("teacher", pa.string()),
    ("sampling", pa.string()),
    ("mode", pa.string()),  # "reasoning" (think block) or "direct" (answer only); teacher.mode
    ("prompt", pa.string()),
    ("completion", pa.string()),
    ("reasoning", pa.string()),
    ("response", pa.string()),
    ("finish_reason", pa.string()),
    ("prompt_tokens", pa.int32()),
    ("completion_tokens", pa.int32()),
    ("error", pa.string()),
]
TRACE_SCHEMA = pa.schema(TRACE_FIELDS)

# One verdict column per verifier. The order is the precedence of reject reasons: a trace without a
# well-formed think block is reported as that before its answer is judged.
VERIFIERS = ("format", "truncation", "math", "code", "language", "repetition")
VERIFIED_SCHEMA = pa.schema(
    TRACE_FIELDS
    + [(f"verdict_{name}", VERDICT_TYPE) for name in VERIFIERS]
    + [("accepted", pa.bool_()), ("reject_reason", pa.string())]
)

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
SFT_SCHEMA = pa.schema(
    [
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("problem_id", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("answer", pa.string()),
        ("num_tokens", pa.int32()),
        ("teacher", pa.string()),
        ("sampling", pa.string()),
        ("verifiers", pa.string()),
        ("trace_key", pa.string()),
    ]
)


def _digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def problem_id(source: str, problem: str) -> str:
    """Stable id for a problem without one: the same source and text always give the same id."""
    return _digest("problem", source, problem)[:24]


def trace_key(
    pid: str, sample_idx: int, teacher: str, revision: str | None, sampling: dict, mode: str = "reasoning"
) -> str:
    """Content address of one sample: any change of teacher, sampling or mode makes a new key."""
    return _digest("trace", pid, sample_idx, teacher, revision, sampling, mode)[:32]


def table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> a table of exactly `schema` (missing columns become nulls, extra keys are dropped)."""
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
