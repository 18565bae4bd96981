"""check_code: does the completion's final Python block pass the problem's tests?"""

from __future__ import annotations

import logging

from verifiers.code.extract import extract_code
from verifiers.code.runner import BadTestSpec, run_assert, run_stdio
from verifiers.code.sandbox import Limits, Sandbox, default_sandbox
from verifiers.verdict import Verdict

log = logging.getLogger(__name__)


def check_code(
    completion: str, tests: dict | None, *, limits: Limits | None = None, sandbox: Sandbox | None = None
) -> Verdict:
    """Run the last fenced code block of the response against ``tests`` in a fresh sandbox.

    passed=None when there are no tests or the spec is malformed (the row cannot be checked);
    passed=False for no code block, a non-Python block, or any failing test.
    """
    if not tests:
        return Verdict(None, "no_tests")
    block = extract_code(completion)
    if block is None:
        return Verdict(False, "no_code", score=0.0)
    if not block.is_python:
        return Verdict(False, "unsupported_language", score=0.0, extracted=block.language)
    limits = limits or Limits()
    sandbox = sandbox or default_sandbox()
    kind = tests.get("kind") if isinstance(tests, dict) else None
    try:
        if kind == "stdio":
            verdict = run_stdio(block.source, tests.get("cases") or [], sandbox, limits)
        elif kind == "assert":
            verdict = run_assert(block.source, tests, sandbox, limits)
        else:
            raise BadTestSpec(f"unknown test kind {kind!r}")
    except BadTestSpec as exc:
        log.warning("unusable test spec: %s", exc)
        return Verdict(None, "bad_test_spec")
    return Verdict(verdict.passed, verdict.reason, verdict.score, extracted=block.source)
