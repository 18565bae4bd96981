"""TRL GRPO reward functions built on the checks: ``(completions, **kwargs) -> list[float | None]``.

``completions`` are strings or chat messages (``[{"role": "assistant", "content": ...}]``); dataset
columns arrive as keyword lists (``answer`` or ``solution``, ``tests``, ``language``, ``problem``).
None means "no reward for this sample" (unverifiable), which TRL leaves out instead of scoring 0.
"""

from __future__ import annotations

from verifiers.batch import check_code_batch, check_math_batch
from verifiers.format import check_format
from verifiers.language import check_language, detect_language
from verifiers.think import split_think
from verifiers.verdict import Verdict


def completion_text(completion) -> str:
    """The generated text of a plain or conversational completion."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") or "" for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


def _score(verdict: Verdict) -> float | None:
    if verdict.passed is None:
        return None
    return verdict.score if verdict.score is not None else float(verdict.passed)


def accuracy_reward(completions, answer=None, solution=None, *, processes: int = 1, **kwargs) -> list[float | None]:
    """1.0 when the final answer equals the reference (``answer``, else ``solution`` column), else 0.0."""
    references = answer if answer is not None else solution
    if references is None:
        return [None] * len(completions)
    texts = [completion_text(c) for c in completions]
    return [_score(v) for v in check_math_batch(texts, list(references), processes=processes)]


def format_reward(completions, **kwargs) -> list[float | None]:
    """1.0 for one well-formed think block followed by a non-empty answer, else 0.0."""
    return [float(bool(check_format(completion_text(c)).passed)) for c in completions]


def language_consistency_reward(completions, language=None, problem=None, prompts=None, **kwargs) -> list[float | None]:
    """Share of the reasoning written in the target language (DeepSeek-R1's language reward).

    The target is the ``language`` column, else the language detected in ``problem`` or the prompt.
    """
    rewards = []
    for i, completion in enumerate(completions):
        target = language[i] if language is not None else None
        if not target:
            source = problem[i] if problem is not None else _prompt_text(prompts[i]) if prompts is not None else ""
            target = detect_language(source) or "en"
        reasoning, response = split_think(completion_text(completion))
        rewards.append(_score(check_language(reasoning if reasoning is not None else response, target)))
    return rewards


def code_reward(completions, tests=None, **kwargs) -> list[float | None]:
    """Share of the test cases the final code block passes (0.0 when it does not run)."""
    if tests is None:
        return [None] * len(completions)
    verdicts = check_code_batch([completion_text(c) for c in completions], list(tests))
    return [_score(v) for v in verdicts]
