"""Rule-based verifiers for reasoning traces: math, code, language consistency, format, quality.

Standalone: imports nothing from Ray or the factory. Every check returns a ``Verdict``; passed=None
means "could not be checked" and must never be counted as a failure.
"""

from verifiers.batch import check_code_batch, check_format_batch, check_language_batch, verdict_columns
from verifiers.code import check_code
from verifiers.format import check_format
from verifiers.language import check_language, detect_language
from verifiers.math_check import check_math, check_math_batch
from verifiers.quality import check_length, check_repetition, check_truncation
from verifiers.think import split_think
from verifiers.verdict import Verdict

# Recorded as provenance in published datasets; bump when a verdict can change for the same input.
__version__ = "0.1.0"

__all__ = [
    "Verdict",
    "check_code",
    "check_code_batch",
    "check_format",
    "check_format_batch",
    "check_language",
    "check_language_batch",
    "check_length",
    "check_math",
    "check_math_batch",
    "check_repetition",
    "check_truncation",
    "detect_language",
    "split_think",
    "verdict_columns",
]
