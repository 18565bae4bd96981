"""Rule-based verifiers for reasoning traces: math, code, language consistency, format, quality.

Standalone: imports nothing from Ray or the factory. Every check returns a ``Verdict``; passed=None
means "could not be checked" and must never be counted as a failure.
"""

from verifiers.code import check_code
from verifiers.format import check_format
from verifiers.language import check_language, detect_language
from verifiers.math_check import check_math, check_math_batch
from verifiers.think import split_think
from verifiers.verdict import Verdict

__all__ = [
    "Verdict",
    "check_code",
    "check_format",
    "check_language",
    "check_math",
    "check_math_batch",
    "detect_language",
    "split_think",
]
