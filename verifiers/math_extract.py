"""Answer extraction from R1-style math output: which string is the model's final answer.

Order: the text after ``</think>`` (else the whole completion), then the last ``\\boxed{}``/``\\fbox{}``,
then "the answer is ...", then GSM8K's ``#### ...``, then the last number.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from verifiers.think import THINK_CLOSE

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_IS_RE = re.compile(r"\banswer\s*(?:is|:|=)\s*:?\s*(?P<ans>[^\n]+)", re.IGNORECASE)
# A math span right at the start of the answer text: $...$, \(...\), \[...\].
_LEADING_MATH_RE = re.compile(r"^(?:\$\$?(?P<d>.+?)\$\$?|\\\((?P<p>.+?)\\\)|\\\[(?P<b>.+?)\\\])")
_GSM8K_RE = re.compile(r"####\s*(?P<ans>[^\n]+)")
# Integers with thousands separators, decimals, simple fractions; a leading sign.
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


class Extracted(NamedTuple):
    kind: str  # "boxed" | "answer_is" | "gsm8k" | "last_number"
    text: str


def answer_region(completion: str) -> str:
    """Only the response counts: a number mentioned while thinking is not an answer."""
    close = completion.rfind(THINK_CLOSE)
    return completion[close + len(THINK_CLOSE) :] if close >= 0 else completion


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces, or of ``\\boxed 5``."""
    for match in reversed(list(_BOX_RE.finditer(text))):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[start + 1 : i].strip()
            continue  # unbalanced (truncated output): try an earlier box
        bare = re.match(r"[^\s$]+", text[start:])
        if bare and match.group(0).endswith(" "):
            return bare.group(0)
    return None


def _clean_inline(answer: str) -> str:
    """The answer inside running text: a leading math span, else the text up to the sentence's end."""
    answer = answer.strip().strip("*").strip()
    math = _LEADING_MATH_RE.match(answer)
    if math:
        return next(g for g in math.groups() if g is not None).strip()
    answer = re.split(r"[.。!?](?:\s|$)", answer, maxsplit=1)[0]
    return answer.strip().strip("*$").strip()


def extract_answer(completion: str) -> Extracted | None:
    region = answer_region(completion)
    boxed = last_boxed(region)
    if boxed:
        return Extracted("boxed", boxed)
    if _BOX_RE.search(region):
        # An empty or cut-off box is the model's answer slot: a number found elsewhere is not its answer.
        return None
    for kind, pattern in (("answer_is", _ANSWER_IS_RE), ("gsm8k", _GSM8K_RE)):
        matches = list(pattern.finditer(region))
        if matches:
            answer = _clean_inline(matches[-1].group("ans"))
            if answer:
                return Extracted(kind, answer)
    numbers = _NUMBER_RE.findall(region)
    if numbers:
        return Extracted("last_number", numbers[-1])
    return None


def reference_answer(reference: str) -> str:
    """The answer inside a reference that is a whole worked solution (MATH's boxed, GSM8K's ####)."""
    boxed = last_boxed(reference)
    if boxed:
        return boxed
    gsm8k = list(_GSM8K_RE.finditer(reference))
    if gsm8k:
        return gsm8k[-1].group("ans").strip()
    return reference.strip()
