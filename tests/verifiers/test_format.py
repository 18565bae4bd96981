import pytest

from verifiers import check_format, split_think


@pytest.mark.parametrize(
    "completion, reasoning, response",
    [
        ("<think>a</think>b", "a", "b"),
        ("<think>\nstep 1\n</think>\n\nThe answer is 4.", "step 1", "The answer is 4."),
        # The template put <think> in the prompt: only the closing tag is in the completion.
        ("step 1\n</think>\nanswer", "step 1", "answer"),
        ("no think block at all", None, "no think block at all"),
        ("<think>cut off mid-thought", "cut off mid-thought", ""),
        ("<think>x</think>y<think>z</think>final", "x</think>y<think>z", "final"),
        ("", None, ""),
    ],
)
def test_split_think(completion, reasoning, response):
    assert split_think(completion) == (reasoning, response)


WELL_FORMED = [
    "<think>Let me add 2 and 2.</think>4",
    "<think>\nreasoning\n</think>\n\n**Answer:** 4",
    "reasoning without the opening tag</think>answer",
    "  \n<think>leading whitespace is fine</think>answer",
]


@pytest.mark.parametrize("completion", WELL_FORMED)
def test_well_formed_passes(completion):
    verdict = check_format(completion)
    assert verdict.passed is True and verdict.reason == "ok"


@pytest.mark.parametrize(
    "completion, reason",
    [
        ("just an answer", "no_think_block"),
        ("<think>never closed", "unclosed_think"),
        ("<think>a</think>b<think>c</think>d", "multiple_think_blocks"),
        ("<think>a</think></think>b", "multiple_think_blocks"),
        ("</think>answer<think>", "malformed_think"),
        ("preamble <think>a</think>b", "text_before_think"),
        ("<think>  \n </think>answer", "empty_reasoning"),
        ("<think>reasoning</think>   \n", "empty_answer"),
        ("", "no_think_block"),
    ],
)
def test_malformed_fails(completion, reason):
    verdict = check_format(completion)
    assert (verdict.passed, verdict.reason) == (False, reason)


@pytest.mark.parametrize(
    "token",
    ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>", "<｜end▁of▁sentence｜>"],
)
def test_leaked_special_token_fails(token):
    verdict = check_format(f"<think>reasoning</think>answer{token}")
    assert (verdict.passed, verdict.reason, verdict.extracted) == (False, "leaked_special_token", token)


@pytest.mark.parametrize("text", ["<think>if a<|b|>c then</think>yes", "<think>|x|</think><|x|> is fine"])
def test_math_with_bars_is_not_a_special_token(text):
    assert check_format(text).passed is True


@pytest.mark.parametrize(
    "completion, passed, reason",
    [
        ("plain answer, no reasoning", True, "ok"),
        ("<think>a</think>b", True, "ok"),
        ("   ", False, "empty_answer"),
        ("<think>unclosed", False, "unclosed_think"),
        ("<think>a</think>b</think>", False, "multiple_think_blocks"),
        ("answer<|im_end|>", False, "leaked_special_token"),
    ],
)
def test_think_optional(completion, passed, reason):
    verdict = check_format(completion, require_think=False)
    assert (verdict.passed, verdict.reason) == (passed, reason)
