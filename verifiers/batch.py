"""Batch forms of the checks, for column batches (Ray Data ``map_batches``, pandas, Arrow ``to_pydict``).

Math runs on a reused pool of worker processes (``check_math_batch``). Code runs each program in its
own sandboxed subprocess already, so a few threads are enough to keep the cores busy.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from verifiers.code import check_code
from verifiers.format import check_format
from verifiers.language import check_language
from verifiers.math_check import check_math_batch
from verifiers.verdict import Verdict

__all__ = ["check_code_batch", "check_format_batch", "check_language_batch", "check_math_batch", "verdict_columns"]


def check_format_batch(completions: Iterable[str], *, require_think: bool = True) -> list[Verdict]:
    return [check_format(c, require_think=require_think) for c in completions]


def check_language_batch(texts: Iterable[str], targets: Iterable[str]) -> list[Verdict]:
    return [check_language(text, target) for text, target in zip(texts, targets, strict=True)]


def check_code_batch(completions: list[str], tests: list[dict | None], *, threads: int = 2) -> list[Verdict]:
    if len(completions) != len(tests):
        raise ValueError(f"{len(completions)} completions but {len(tests)} test specs")
    with ThreadPoolExecutor(max(1, threads)) as executor:
        return list(executor.map(check_code, completions, tests))


def verdict_columns(name: str, verdicts: list[Verdict]) -> dict[str, list]:
    """Flatten verdicts into columns ``<name>_passed``, ``<name>_reason``, ``<name>_score``, ``<name>_extracted``."""
    return {
        f"{name}_passed": [v.passed for v in verdicts],
        f"{name}_reason": [v.reason for v in verdicts],
        f"{name}_score": [v.score for v in verdicts],
        f"{name}_extracted": [v.extracted for v in verdicts],
    }
