"""Running a candidate program against a test spec in the sandbox; one Verdict per spec.

Specs (the Problem record's ``tests``):
- ``{"kind": "stdio", "cases": [{"input": "...", "output": "..."}]}``: one run per case, stdout compared
  by ``outputs_match``; score = share of cases passed.
- ``{"kind": "assert", "code": "<defines check(candidate)>", "entry_point": "<name>"}`` (HumanEval):
  one run of solution + tests, then ``check(entry_point)`` by a harness (stdin is empty for the program).
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
    if result.sandbox_error:
        return "sandbox_error"  # the sandbox failed during the run (logged where it happened)
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


# The harness proves that check() returned by printing a per-run secret after it. The secret comes on
# stdin and is read before the candidate's code runs, so it is in no file, argument or environment
# the code could read: neither an early exit with status 0 nor printing every file in reach forges a
# pass. Code that inspects the interpreter itself (the harness's frame, its memory) could still find
# it, as such code could also fake equality; that is beyond what a test harness in-process can stop.
_ASSERT_HARNESS = """\
import os as _os
import sys as _sys


def _harness():
    secret = _sys.stdin.buffer.read()
    namespace = {{"__name__": "__main__", "__file__": {solution!r}, "__builtins__": __builtins__}}
    with open({solution!r}, "rb") as handle:
        program = compile(handle.read(), {solution!r}, "exec")
    exec(program, namespace)
    namespace["check"](namespace[{entry_point!r}])
    _sys.stdout.flush()
    _os.write(1, b"\\n" + secret + b"\\n")


_harness()
"""
SOLUTION = "solution.py"


def run_assert(source: str, spec: dict, sandbox: Sandbox, limits: Limits) -> Verdict:
    tests, entry_point = spec.get("code"), spec.get("entry_point")
    if not isinstance(tests, str) or not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise BadTestSpec("assert spec needs 'code' (str) and 'entry_point' (identifier)")
    secret = secrets.token_hex(16)
    program = f"{source}\n\n\n{tests}\n"
    harness = _ASSERT_HARNESS.format(solution=SOLUTION, entry_point=entry_point)
    result = sandbox.run({SCRIPT: harness, SOLUTION: program}, SCRIPT, stdin=secret, limits=limits)
    reason = _failure(result)
    if reason == "runtime_error" and "AssertionError" in result.stderr:
        reason = "failed_tests"
    if reason is None and result.stdout.rstrip().endswith(secret):
        return Verdict(True, OK, score=1.0)
    return Verdict(False, reason or "exited_early", score=0.0)
