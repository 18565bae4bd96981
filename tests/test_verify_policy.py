"""The verify stage's acceptance policy over every verifier, on hand-made traces (no Ray needed)."""

import json

import pytest

from factory.config import VerifyConfig
from factory.stages.verify import verify_rows

ADD_TESTS = json.dumps({"kind": "stdio", "cases": [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6"}]})
GOOD_CODE = "<think>\nRead two ints and add.\n</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
BAD_CODE = "<think>\nMultiply, surely.\n</think>\n```python\na, b = map(int, input().split())\nprint(a * b)\n```"
ZH_PROBLEM = "小明有3个苹果，又买了4个。他现在有几个苹果？"


def _row(**kw):
    base = {"problem_id": "p", "domain": "math", "problem": "What is 3+4?", "answer": "7", "finish_reason": "stop"}
    return {**base, **kw}


@pytest.mark.parametrize(
    "row, accepted, reason",
    [
        (_row(completion="<think>\n3 plus 4 is 7.\n</think>\nThe answer is \\boxed{7}."), True, None),
        (_row(completion="<think>\n3 plus 4 is 8.\n</think>\n\\boxed{8}"), False, "math:wrong_answer"),
        (_row(completion="\\boxed{7}"), False, "format:no_think_block"),
        (_row(completion="<think>\n3 plus 4 is 7.\n</think>\n\\boxed{7}", answer=None), False, "math:no_reference"),
        (_row(completion="<think>\n3 plus 4 is", finish_reason="length"), False, "format:unclosed_think"),
        (_row(completion="<think>\nok\n</think>\n\\boxed{7}", finish_reason="length"), False, "truncation:truncated"),
        (_row(completion=None, error="prompt too long"), False, "generation_error"),
        (_row(domain="code", problem="Add two ints.", tests=ADD_TESTS, completion=GOOD_CODE), True, None),
        (_row(domain="code", problem="Add two ints.", tests=ADD_TESTS, completion=BAD_CODE), False, "code:wrong_output"),
        (_row(domain="code", problem="Add two ints.", completion=GOOD_CODE), False, "code:no_tests"),
        (
            _row(problem=ZH_PROBLEM, completion="<think>\n小明原来有3个苹果，又买了4个，一共7个。\n</think>\n答案是 \\boxed{7}"),
            True,
            None,
        ),
        (
            _row(problem=ZH_PROBLEM, completion="<think>\nXiao Ming has three apples and buys four more, so seven in all.\n</think>\n\\boxed{7}"),
            False,
            "language:mixed_language",
        ),
        (
            _row(completion="<think>\n" + "and then we add them again " * 40 + "\n</think>\n\\boxed{7}"),
            False,
            "repetition:repetitive",
        ),
    ],
)
def test_policy(row, accepted, reason):
    [out] = verify_rows([row], VerifyConfig())
    assert (out["accepted"], out["reject_reason"]) == (accepted, reason), out


def test_settings_relax_the_policy():
    relaxed = VerifyConfig.model_validate(
        {"require_think": False, "math": {"unverifiable": "accept"}, "language": {"enabled": False}}
    )
    rows = [
        _row(completion="\\boxed{7}"),
        _row(completion="<think>\nx\n</think>\n\\boxed{7}", answer=None),
        _row(problem=ZH_PROBLEM, completion="<think>\nSeven apples.\n</think>\n\\boxed{7}"),
    ]
    out = verify_rows(rows, relaxed)
    assert [r["accepted"] for r in out] == [True, True, True]
    assert out[1]["verdict_math"]["passed"] is None and out[2]["verdict_language"] is None
