"""The code a completion submits: its final fenced block (after the think block)."""

from __future__ import annotations

import re
from typing import NamedTuple

from verifiers.think import split_think

_FENCE_RE = re.compile(r"^```[ \t]*(?P<lang>[\w+#.-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
PYTHON_TAGS = {"", "python", "python3", "py", "py3"}


class CodeBlock(NamedTuple):
    language: str  # lower-cased fence tag; "" when untagged
    source: str

    @property
    def is_python(self) -> bool:
        return self.language in PYTHON_TAGS


def extract_code(completion: str) -> CodeBlock | None:
    """Last fenced block of the response; an untagged block is taken to be Python."""
    _, response = split_think(completion)
    blocks = list(_FENCE_RE.finditer(response))
    if not blocks:
        return None
    last = blocks[-1]
    return CodeBlock(last.group("lang").lower(), last.group("code"))
