"""The one result type every check returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Outcome of one check.

    ``passed`` is None when the sample could not be checked (no reference, unparsable gold, ...);
    callers must never count that as a failure.
    """

    passed: bool | None
    reason: str  # short machine-readable reason: "ok", "wrong_answer", "timeout", ...
    score: float | None = None
    extracted: str | None = None


OK = "ok"
