import pytest

from verifiers import Verdict, check_math, check_math_batch
from verifiers.math_extract import extract_answer


@pytest.mark.parametrize(
    "completion, kind, text",
    [
        (r"so $\boxed{42}$.", "boxed", "42"),
        (r"\boxed{\frac{1}{\sqrt{2}}}", "boxed", r"\frac{1}{\sqrt{2}}"),
        (r"first \boxed{1}, then \boxed{2}", "boxed", "2"),
        (r"\fbox{7}", "boxed", "7"),
        (r"\boxed 5 is it", "boxed", "5"),
        (r"good \boxed{3} then cut off \boxed{\frac{1}{", "boxed", "3"),
        ("The answer is $x = 5$, as shown.", "answer_is", "x = 5"),
        (r"The final answer is \(\frac{1}{2}\).", "answer_is", r"\frac{1}{2}"),
        ("**Answer:** 12.", "answer_is", "12"),
        ("So the answer is **7**", "answer_is", "7"),
        ("Natalia sold 48 clips.\n#### 72", "gsm8k", "72"),
        ("#### 1,234", "gsm8k", "1,234"),
        ("3 apples and 4.5 pears", "last_number", "4.5"),
        ("costs -3/4 dollars each", "last_number", "-3/4"),
        ("a total of 1,000,000 people", "last_number", "1,000,000"),
        # Only the response counts; what was said while thinking is not the answer.
        ("<think>maybe \\boxed{5}</think>It is 7", "last_number", "7"),
    ],
)
def test_extraction(completion, kind, text):
    extracted = extract_answer(completion)
    assert extracted is not None
    assert (extracted.kind, extracted.text) == (kind, text)


@pytest.mark.parametrize(
    "completion",
    ["no digits here", r"\boxed{}", r"it is \boxed{\frac{1}{2}", "<think>the answer is 5</think>I am not sure."],
)
def test_extraction_finds_nothing(completion):
    assert extract_answer(completion) is None


EQUIVALENT = [
    # numbers written differently
    (r"\boxed{\frac{1}{2}}", "0.5"),
    (r"\boxed{0.5}", r"\frac12"),
    (r"\boxed{\dfrac{3}{8}}", r"\frac{3}{8}"),
    (r"\boxed{0.333333}", r"\frac13"),
    (r"\boxed{12\frac{3}{5}}", "12.6"),
    (r"\boxed{1,000}", "1000"),
    (r"\boxed{10{,}000}", "10000"),
    ("#### 1,234", "1234"),
    # units, percent, degrees, currency
    (r"\boxed{50\%}", "50"),
    (r"\boxed{5 \text{ cm}}", "5"),
    (r"\boxed{120^\circ}", "120"),
    (r"\boxed{\$6}", r"\$6"),
    # symbolic
    (r"\boxed{2\sqrt{3}}", r"\sqrt{12}"),
    (r"\boxed{\pi/2}", r"\frac{\pi}{2}"),
    (r"\boxed{x^2+2x+1}", "(x+1)^2"),
    (r"\boxed{x=5}", "5"),
    # sets, intervals, tuples, matrices
    (r"\boxed{\{1,2\}}", r"\{2,1\}"),
    (r"\boxed{2, 3}", "3, 2"),
    (r"\boxed{[1,3)}", "[1,3)"),
    (r"\boxed{(1,2)}", "(1, 2)"),
    (r"\boxed{\begin{pmatrix}1\\2\end{pmatrix}}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
    # multiple choice
    (r"\boxed{\text{(C)}}", "C"),
    # answers outside a box
    ("The answer is $x = 5$.", "5"),
    ("<think>try 5... no, 7</think>The answer is 7.", "7"),
]


@pytest.mark.parametrize("completion, reference", EQUIVALENT)
def test_equivalent_answers_pass(completion, reference):
    verdict = check_math(completion, reference)
    assert verdict == Verdict(True, "ok", score=1.0, extracted=verdict.extracted)
    assert verdict.extracted


@pytest.mark.parametrize(
    "completion, reference",
    [
        (r"\boxed{3}", "4"),
        (r"\boxed{-4}", "4"),
        (r"\boxed{1/3}", "0.333"),  # not within Math-Verify's rounding
        (r"\boxed{[1,3]}", "[1,3)"),
        (r"\boxed{x^2+1}", "(x+1)^2"),
        ("<think>it is 5</think>The answer is 7.", "5"),
    ],
)
def test_wrong_answers_fail(completion, reference):
    verdict = check_math(completion, reference)
    assert (verdict.passed, verdict.reason, verdict.score) == (False, "wrong_answer", 0.0)


@pytest.mark.parametrize(
    "completion, reference, passed, reason",
    [
        (r"\boxed{5}", None, None, "no_reference"),
        (r"\boxed{5}", "", None, "no_reference"),
        (r"\boxed{5}", "   ", None, "no_reference"),
        (r"\boxed{5}", r"\frac{", None, "unparsable_reference"),
        ("I do not know.", "5", False, "no_answer"),
        (r"cut off \boxed{\frac{1}{", "1/2", False, "no_answer"),
    ],
)
def test_unverifiable_and_missing(completion, reference, passed, reason):
    verdict = check_math(completion, reference)
    assert (verdict.passed, verdict.reason) == (passed, reason)


def test_batch_matches_single_calls():
    completions = [r"\boxed{4}", r"\boxed{5}", "no answer", r"\boxed{1}", r"\boxed{2}"]
    references = ["4", "4", "4", None, r"\frac{"]
    batch = check_math_batch(completions, references, processes=2)
    assert batch == [check_math(c, r) for c, r in zip(completions, references)]
    assert [v.reason for v in batch] == ["ok", "wrong_answer", "no_answer", "no_reference", "unparsable_reference"]


def test_batch_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 completions but 1 references"):
        check_math_batch(["a", "b"], ["1"])
