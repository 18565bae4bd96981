"""The TRL GRPO adapters: signature (completions, **kwargs) -> list[float | None]."""

import pytest

from verifiers.rewards import (
    accuracy_reward,
    code_reward,
    completion_text,
    format_reward,
    language_consistency_reward,
)


def chat(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize("wrap", [str, chat], ids=["plain", "conversational"])
def test_accuracy_reward(wrap):
    completions = [wrap(r"<think>2+2</think>\boxed{4}"), wrap(r"\boxed{5}"), wrap("no idea"), wrap(r"\boxed{1}")]
    rewards = accuracy_reward(completions, answer=["4", "4", "4", None], trainer_state=object())
    assert rewards == [1.0, 0.0, 0.0, None]


def test_accuracy_reward_takes_a_worked_solution_column():
    solutions = [r"Since 2+2=4, the answer is $\boxed{4}$.", "Natalia sold 48 + 24 = 72 clips.\n#### 72"]
    assert accuracy_reward([r"\boxed{4}", "The answer is 72."], solution=solutions) == [1.0, 1.0]


def test_accuracy_reward_without_references_is_none():
    assert accuracy_reward([r"\boxed{4}"]) == [None]


def test_format_reward():
    assert format_reward(["<think>a</think>b", chat("<think>a</think>b"), "b", "<think>a"]) == [1.0, 1.0, 0.0, 0.0]


def test_language_reward_targets():
    completions = [
        "<think>我们 need to compute 面积</think>4",
        "<think>先算面积</think>4",
        "<think>area first</think>4",
    ]
    by_column = language_consistency_reward(completions, language=["zh", "zh", "en"])
    assert by_column[0] == pytest.approx(4 / 6) and by_column[1:] == [1.0, 1.0]
    prompts = [[{"role": "user", "content": "求三角形的面积"}]] * 2 + [[{"role": "user", "content": "Find the area"}]]
    assert language_consistency_reward(completions, prompts=prompts) == by_column
    assert language_consistency_reward(completions, problem=["求面积", "求面积", "Find the area"]) == by_column


def test_code_reward():
    tests = {"kind": "stdio", "cases": [{"input": "2\n", "output": "4"}, {"input": "3\n", "output": "9"}]}
    completions = ["```python\nn = int(input())\nprint(n * n)\n```", "```python\nprint(4)\n```", "no code"]
    assert code_reward(completions, tests=[tests, tests, tests]) == [1.0, 0.5, 0.0]
    assert code_reward(completions[:1]) == [None]


def test_completion_text_joins_assistant_messages():
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"
