"""check_math: is the final answer of a completion equivalent to the reference? (Math-Verify)

Math-Verify runs with its own signal-based timeouts disabled; the hard wall-clock limit comes from
running every check in a worker process that is killed when it overruns (``verifiers.procpool``).
"""

from __future__ import annotations

import functools
import logging

from verifiers.math_extract import extract_answer, reference_answer
from verifiers.procpool import TIMEOUT, WORKER_DIED, Outcome, get_pool
from verifiers.verdict import OK, Verdict

log = logging.getLogger(__name__)

# sympy can be made to build astronomically large integers ("9^{9^{9}}"); a worker that hits this cap
# gets a MemoryError (a failed check) instead of taking the host down.
WORKER_MEMORY_LIMIT_MB = 4096
_PRELOAD = ("math_verify", "verifiers.math_check")


@functools.lru_cache(maxsize=4096)
def _parse_gold(reference: str) -> list:
    from math_verify import parse

    # Wrapping in \boxed{} gives the reference Math-Verify's answer normalisation (units, \text, \%, ...)
    # whether it is plain ("420") or LaTeX ("\dfrac{1}{9}").
    return parse(f"\\boxed{{{reference}}}", parsing_timeout=None)


def _is_parsed(parsed: list) -> bool:
    """Math-Verify falls back to the raw string when sympy parsing fails; that is not a parsed gold."""
    return any(not isinstance(item, str) for item in parsed)


def judge(completion: str, reference: str) -> Verdict:
    """The whole check, run inside a worker: no timeout of its own."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that its timeouts are off
    gold = _parse_gold(reference_answer(reference))
    if not _is_parsed(gold):
        return Verdict(None, "unparsable_reference")
    answer = extract_answer(completion)
    if answer is None:
        return Verdict(False, "no_answer", score=0.0)
    predicted = parse(f"\\boxed{{{answer.text}}}", parsing_timeout=None)
    if not predicted:
        return Verdict(False, "unparsable_answer", score=0.0, extracted=answer.text)
    if verify(gold, predicted, timeout_seconds=None):
        return Verdict(True, OK, score=1.0, extracted=answer.text)
    return Verdict(False, "wrong_answer", score=0.0, extracted=answer.text)


def verdict_from_outcome(outcome: Outcome) -> Verdict:
    if outcome.error is None:
        return outcome.value
    if outcome.error == TIMEOUT:
        return Verdict(False, "timeout", score=0.0)
    if outcome.error == WORKER_DIED:  # e.g. killed by the memory cap: the answer's fault
        return Verdict(False, "checker_crashed", score=0.0)
    log.warning("math check raised in its worker: %s", outcome.error)
    return Verdict(None, "checker_error")


def check_math_batch(
    completions: list[str],
    references: list[str | None],
    *,
    processes: int = 1,
    timeout_s: float = 5.0,
) -> list[Verdict]:
    """check_math over many rows, on ``processes`` long-lived workers reused across calls."""
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    verdicts: list[Verdict | None] = [None] * len(completions)
    todo = []
    for i, reference in enumerate(references):
        if reference is None or not str(reference).strip():
            verdicts[i] = Verdict(None, "no_reference")
        else:
            todo.append(i)
    pool = get_pool(processes, _PRELOAD, WORKER_MEMORY_LIMIT_MB)
    outcomes = pool.map(judge, [(completions[i], str(references[i])) for i in todo], timeout_s)
    for i, outcome in zip(todo, outcomes):
        verdicts[i] = verdict_from_outcome(outcome)
    return verdicts  # type: ignore[return-value]


def check_math(completion: str, reference: str | None, *, timeout_s: float = 5.0) -> Verdict:
    """Compare the completion's final answer with ``reference`` under a hard ``timeout_s`` limit.

    ``reference`` is a bare answer ("420", "\\frac{1}{9}") or a worked solution whose answer is boxed
    or follows GSM8K's "####". Works from any thread. passed=None when the reference is missing or
    unparsable.
    """
    return check_math_batch([completion], [reference], processes=1, timeout_s=timeout_s)[0]
