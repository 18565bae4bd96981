"""Running a candidate program against a test spec in the sandbox; one Verdict per spec.

Specs (the Problem record's ``tests``):
- ``{"kind": "stdio", "cases": [{"input": "...", "output": "..."}]}``: one run per case, stdout compared
  by ``outputs_match``; score = share of cases passed.
- ``{"kind": "assert", "code": "<defines check(candidate)>", "entry_point": "<name>"}`` (HumanEval):
  one run of solution + tests + ``check(entry_point)``.
"""

from __future__ import annotations

import secrets

from verifiers.code.compare import outputs_match
from verifiers.code.sandbox import Limits, RunResult, Sandbox
from verifiers.verdict import OK, Verdict

SCRIPT = "main.py"


class BadTestSpec(ValueError):
    """The test spec itself is malformed: the row cannot be checked."""


def _failure(result: RunResult) -> str | None:
    """Reason a run failed for reasons other than its output, or None."""
    if result.timed_out:
        return "timeout"
    if result.output_overflow:
        return "output_limit"
    if result.returncode is not None and result.returncode < 0:
        return "killed"  # e.g. SIGXCPU from the CPU limit, SIGKILL
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        return "memory_limit" if last.startswith("MemoryError") else "runtime_error"
    return None


def run_stdio(source: str, cases: list[dict], sandbox: Sandbox, limits: Limits) -> Verdict:
    if not cases:
        raise BadTestSpec("stdio spec has no cases")
    passed, first_failure = 0, None
    for case in cases:
        if not isinstance(case, dict) or "input" not in case or "output" not in case:
            raise BadTestSpec("each stdio case needs 'input' and 'output'")
        result = sandbox.run({SCRIPT: source}, SCRIPT, stdin=str(case["input"]), limits=limits)
        reason = _failure(result) or (None if outputs_match(result.stdout, str(case["output"])) else "wrong_output")
        if reason is None:
            passed += 1
            continue
        first_failure = first_failure or reason
        if reason == "timeout":  # an endless loop would time out on every case: stop paying for it
            break
    score = passed / len(cases)
    return Verdict(True, OK, score=score) if first_failure is None else Verdict(False, first_failure, score=score)


# The last line proves check() returned: a program that exits early (sys.exit(0), os._exit(0)) with
# status 0 never prints the per-run nonce. The nonce is in the file, so code that reads its own source
# could forge it; this stops accidental and lazy early exits, not a determined adversary.
_ASSERT_HARNESS = """{source}


{tests}


check({entry_point})
print({nonce!r})
"""


def run_assert(source: str, spec: dict, sandbox: Sandbox, limits: Limits) -> Verdict:
    tests, entry_point = spec.get("code"), spec.get("entry_point")
    if not isinstance(tests, str) or not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise BadTestSpec("assert spec needs 'code' (str) and 'entry_point' (identifier)")
    nonce = f"all-tests-passed-{secrets.token_hex(8)}"
    program = _ASSERT_HARNESS.format(source=source, tests=tests, entry_point=entry_point, nonce=nonce)
    result = sandbox.run({SCRIPT: program}, SCRIPT, limits=limits)
    reason = _failure(result)
    if reason == "runtime_error" and "AssertionError" in result.stderr:
        reason = "failed_tests"
    if reason is None and result.stdout.rstrip().endswith(nonce):
        return Verdict(True, OK, score=1.0)
    return Verdict(False, reason or "exited_early", score=0.0)
