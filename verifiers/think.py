"""Splitting R1-style completions into reasoning and response; one implementation for the whole repo."""

from __future__ import annotations

import re

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# Chat-template tokens that must never appear in a training target. ChatML/Qwen (<|im_end|>), Llama 3
# (<|eot_id|>) and GPT-style (<|endoftext|>) use ASCII bars; DeepSeek uses fullwidth bars. Requiring an
# underscore or a known name keeps math such as "a<|b|>c" from matching.
_SPECIAL_TOKEN_RE = re.compile(
    r"<\|(?:endoftext|[a-z0-9]+(?:_[a-z0-9]+)+)\|>"
    r"|<｜[^｜\n]{1,40}｜>"
)


def split_think(completion: str) -> tuple[str | None, str]:
    """Return ``(reasoning, response)``.

    ``reasoning`` is None when the completion has no think block. The chat template may put ``<think>``
    in the prompt, so a completion holding only ``</think>`` still has a block: everything before it.
    An unclosed ``<think>`` (truncated generation) yields all text after it as reasoning and an empty
    response. With several blocks the response is what follows the last ``</think>``.
    """
    close = completion.rfind(THINK_CLOSE)
    if close >= 0:
        before, response = completion[:close], completion[close + len(THINK_CLOSE) :]
        open_ = before.find(THINK_OPEN)
        reasoning = before[open_ + len(THINK_OPEN) :] if open_ >= 0 else before
        return reasoning.strip(), response.strip()
    open_ = completion.find(THINK_OPEN)
    if open_ >= 0:
        return completion[open_ + len(THINK_OPEN) :].strip(), ""
    return None, completion.strip()


def find_special_tokens(text: str) -> list[str]:
    return _SPECIAL_TOKEN_RE.findall(text)
