"""check_format: the R1 output shape (one think block, then a non-empty answer)."""

from __future__ import annotations

from verifiers.think import THINK_CLOSE, THINK_OPEN, find_special_tokens, split_think
from verifiers.verdict import OK, Verdict


def check_format(completion: str, *, require_think: bool = True) -> Verdict:
    """One well-formed ``<think>...</think>`` block, non-empty reasoning and answer, no leaked tokens.

    A completion may lack the opening tag (templates that put ``<think>`` in the prompt). With
    ``require_think=False`` a completion without any think block passes when non-empty; a block that
    is present must still be well formed.
    """
    leaked = find_special_tokens(completion)
    if leaked:
        return Verdict(False, "leaked_special_token", extracted=leaked[0])
    opens, closes = completion.count(THINK_OPEN), completion.count(THINK_CLOSE)
    if opens == 0 and closes == 0:
        if require_think:
            return Verdict(False, "no_think_block")
        return Verdict(True, OK) if completion.strip() else Verdict(False, "empty_answer")
    if opens > 1 or closes > 1:
        return Verdict(False, "multiple_think_blocks")
    if closes == 0:
        return Verdict(False, "unclosed_think")
    close_at = completion.index(THINK_CLOSE)
    if opens == 1:
        open_at = completion.index(THINK_OPEN)
        if open_at > close_at:
            return Verdict(False, "malformed_think")
        if completion[:open_at].strip():
            return Verdict(False, "text_before_think")
    reasoning, response = split_think(completion)
    if not reasoning:
        return Verdict(False, "empty_reasoning")
    if not response:
        return Verdict(False, "empty_answer")
    return Verdict(True, OK)
