from verifiers import (
    Verdict,
    check_code_batch,
    check_format_batch,
    check_language_batch,
    check_math_batch,
    verdict_columns,
)


def test_batches_keep_row_order():
    completions = ["<think>a</think>```python\nprint(1)\n```", "```python\nprint(2)\n```", "no code"]
    tests = [{"kind": "stdio", "cases": [{"input": "", "output": "1"}]}] * 2 + [None]
    assert [v.reason for v in check_code_batch(completions, tests)] == ["ok", "wrong_output", "no_tests"]
    assert [v.passed for v in check_format_batch(completions)] == [True, False, False]
    assert [v.passed for v in check_format_batch(completions, require_think=False)] == [True, True, True]
    texts = ["all english words here", "全是中文", "mixed 中文 english words"]
    assert [v.passed for v in check_language_batch(texts, ["en", "zh", "zh"])] == [True, True, False]


def test_math_batch_in_two_calls_reuses_the_pool():
    first = check_math_batch([r"\boxed{1}"] * 4, ["1", "2", "1", "2"], processes=2)
    second = check_math_batch([r"\boxed{2}"] * 4, ["1", "2", "1", "2"], processes=2)
    assert [v.passed for v in first] == [True, False, True, False]
    assert [v.passed for v in second] == [False, True, False, True]


def test_verdict_columns():
    columns = verdict_columns("math", [Verdict(True, "ok", 1.0, "4"), Verdict(None, "no_reference")])
    assert columns == {
        "math_passed": [True, None],
        "math_reason": ["ok", "no_reference"],
        "math_score": [1.0, None],
        "math_extracted": ["4", None],
    }
