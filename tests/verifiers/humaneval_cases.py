"""HumanEval cases for the code verifier, shared by its test and bench/bench_code_sandbox.py."""

from __future__ import annotations

from verifiers import Verdict, check_code

# Wraps the canonical function so each result is off by a little: a wrong solution with the right
# signature, whatever the return type.
CORRUPT = """

_canonical = {name}


def {name}(*args, **kwargs):
    result = _canonical(*args, **kwargs)
    if isinstance(result, bool):
        return not result
    if isinstance(result, (int, float)):
        return result + 1
    if isinstance(result, str):
        return result + "?"
    if isinstance(result, (list, tuple)):
        return type(result)([*result, None])
    return "wrong"
"""


def check_humaneval(problem: dict, corrupt: bool) -> Verdict:
    """check_code on a HumanEval problem's canonical solution, or on a corrupted copy of it."""
    source = problem["prompt"] + problem["canonical_solution"]
    if corrupt:
        source += CORRUPT.format(name=problem["entry_point"])
    tests = {"kind": "assert", "code": problem["test"], "entry_point": problem["entry_point"]}
    return check_code(f"```python\n{source}\n```", tests)
