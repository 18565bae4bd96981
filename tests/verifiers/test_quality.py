import pytest

from verifiers import check_length, check_repetition, check_truncation
from verifiers.quality import repeated_ngram_share


@pytest.mark.parametrize(
    "completion, finish_reason, passed, reason",
    [
        ("<think>a</think>b", "stop", True, "ok"),
        ("<think>a</think>b", None, True, "ok"),
        ("<think>a</think>b", "length", False, "truncated"),
        ("<think>still thinking when the budget ran", "stop", False, "unclosed_think"),
        ("prompt opened the block; </think> answer", None, True, "ok"),
    ],
)
def test_truncation(completion, finish_reason, passed, reason):
    verdict = check_truncation(completion, finish_reason)
    assert (verdict.passed, verdict.reason) == (passed, reason)


LOOP = "Let me try again. " + "So the sum of the first ten terms is fifty five, which we verify now. " * 30
PROSE = " ".join(f"step {i}: multiply the previous value by {i} and add {i * i} to it." for i in range(40))


@pytest.mark.parametrize(
    "text, passed",
    [
        (PROSE, True),
        ("short text", True),
        (LOOP, False),
        ("我们先计算面积然后再计算周长。" * 20, False),  # CJK counts by character
    ],
)
def test_repetition(text, passed):
    assert check_repetition(text).passed is passed


def test_repetition_score_is_the_repeated_share():
    assert repeated_ngram_share("a b c d", n=2) == 0.0
    assert repeated_ngram_share("a b a b a b", n=2) == pytest.approx(1 - 2 / 5)
    assert check_repetition(LOOP).score > 0.9


@pytest.mark.parametrize(
    "kwargs, passed, reason",
    [
        ({}, True, "ok"),
        ({"min_chars": 100}, False, "too_short"),
        ({"max_chars": 5}, False, "too_long"),
        ({"num_tokens": 5000, "max_tokens": 4096}, False, "too_many_tokens"),
        ({"num_tokens": 100, "max_tokens": 4096}, True, "ok"),
    ],
)
def test_length(kwargs, passed, reason):
    verdict = check_length("some answer text", **kwargs)
    assert (verdict.passed, verdict.reason) == (passed, reason)


def test_blank_text_is_too_short():
    assert check_length("   \n").reason == "too_short"
