"""Code verification: extract the submitted program, run it sandboxed against the tests."""

from verifiers.code.check import check_code
from verifiers.code.sandbox import Limits, Sandbox, SandboxUnavailable

__all__ = ["Limits", "Sandbox", "SandboxUnavailable", "check_code"]
