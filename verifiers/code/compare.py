"""Judging a program's stdout against the expected output."""

from __future__ import annotations

import math
import re

_INT_RE = re.compile(r"[+-]?\d+")
REL_TOL = 1e-6
ABS_TOL = 1e-6


def _tokens_match(got: str, want: str) -> bool:
    if got == want:
        return True
    if _INT_RE.fullmatch(want):  # integers compare exactly: floats would call 10**18 equal to 10**18 + 1
        return _INT_RE.fullmatch(got) is not None and int(got) == int(want)
    try:
        got_f, want_f = float(got), float(want)
    except ValueError:
        return False
    if math.isnan(want_f) or math.isinf(want_f):
        return False
    return math.isclose(got_f, want_f, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def outputs_match(got: str, want: str) -> bool:
    """Equal up to whitespace (line ends, trailing spaces, blank lines); numbers within 1e-6."""
    got_lines = [line.split() for line in got.strip().splitlines()]
    want_lines = [line.split() for line in want.strip().splitlines()]
    got_lines = [line for line in got_lines if line]
    want_lines = [line for line in want_lines if line]
    if len(got_lines) != len(want_lines):
        return False
    return all(
        len(g) == len(w) and all(_tokens_match(a, b) for a, b in zip(g, w)) for g, w in zip(got_lines, want_lines)
    )
