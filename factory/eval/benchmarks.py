"""Benchmark files -> problem rows with a reference answer.

The math benchmark files in circulation name their fields differently (`problem` or `question`;
`answer`, `final_answer` as a list, `gt`, or only a worked `solution` whose answer is boxed), so the
fields are looked up in that order. `verifiers.check_math` accepts a worked solution as the reference.
"""

from __future__ import annotations

from pathlib import Path

from factory.config import BenchmarkConfig, SourceConfig
from factory.ingest import read_raw

PROBLEM_FIELDS = ("problem", "question", "prompt")
ANSWER_FIELDS = ("answer", "final_answer", "gt", "solution")
ID_FIELDS = ("problem_id", "id", "idx")


def benchmark_name(bench: BenchmarkConfig) -> str:
    if bench.name:
        return bench.name
    path = Path(bench.path)
    # qwen25_math_eval/aime24/test.jsonl -> aime24
    return path.parent.name if path.stem in ("test", "train", "validation") else path.stem


def _answer(raw: dict) -> str | None:
    for key in ANSWER_FIELDS:
        value = raw.get(key)
        if isinstance(value, list):  # OlympiadBench: final_answer is a list of equivalent forms
            value = value[0] if len(value) == 1 else ", ".join(map(str, value))
        if value is not None and str(value).strip():
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # AMC's 27.0
            return str(value)
    return None


def load_benchmark(bench: BenchmarkConfig) -> tuple[list[dict], list[dict]]:
    """(problems, set-aside rows with their reason)."""
    name = benchmark_name(bench)
    problems, rejects = [], []
    for i, (where, raw, error) in enumerate(read_raw(SourceConfig(path=bench.path))):
        if bench.limit is not None and len(problems) >= bench.limit:
            break
        problem = next((raw.get(k) for k in PROBLEM_FIELDS if isinstance(raw, dict) and isinstance(raw.get(k), str)), None)
        reason = error or ("missing_problem" if not problem else None) or ("missing_answer" if _answer(raw) is None else None)
        if reason:
            rejects.append({"benchmark": name, "where": where, "reason": reason})
            continue
        ident = next((raw[k] for k in ID_FIELDS if raw.get(k) is not None), i)
        problems.append({"problem_id": f"{name}-{ident}", "source": name, "domain": "math",
                         "problem": problem, "answer": _answer(raw)})
    return problems, rejects
