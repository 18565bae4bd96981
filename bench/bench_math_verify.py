"""Math verifier: agreement with real grader labels, and throughput of the batch form.

Run: python bench/bench_math_verify.py   (from the project root, with the shared data beside it)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verifiers import check_math_batch  # noqa: E402
from verifiers.math_check import judge  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "qwen25_math_eval" / "math_cot_100.jsonl"


def load():
    rows = [json.loads(line) for line in DATA.open()]
    completions = [c for row in rows for c in row["code"]]
    references = [row["answer"] for row in rows for _ in row["code"]]
    labels = [s for row in rows for s in row["score"]]
    return completions, references, labels


def raw_math_verify(completions, references):
    """What a script would do without this package: Math-Verify on the whole completion, one process."""
    from math_verify import parse, verify

    return [verify(parse(f"${ref}$"), parse(text)) for text, ref in zip(completions, references)]


def timed(fn, repeat=5):
    """Median wall time of ``repeat`` runs (the machine may be shared: the median resists spikes)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], result


def main():
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    completions, references, labels = load()
    n = len(completions)

    start = time.perf_counter()
    verdicts = check_math_batch(completions, references, processes=2)
    print(f"first call (starts 2 workers): {time.perf_counter() - start:.2f} s")

    agree = sum(v.passed is label for v, label in zip(verdicts, labels))
    print(f"\nagreement with grader labels: {agree}/{n} = {agree / n:.2%}")
    for i, (v, ref, label) in enumerate(zip(verdicts, references, labels)):
        if v.passed is not label:
            print(f"  row {i // 8} sample {i % 8}: reference {ref!r}, extracted {v.extracted!r}, "
                  f"label {label}, verdict {v.passed} ({v.reason})")  # fmt: skip
    reasons = {}
    for v in verdicts:
        reasons[v.reason] = reasons.get(v.reason, 0) + 1
    print(f"  reasons: {reasons}")

    check_math_batch(completions[:2], references[:2], processes=1)  # start the 1-process pool
    raw_s, raw = timed(lambda: raw_math_verify(completions, references))
    raw_agree = sum(r is label for r, label in zip(raw, labels))
    loop_s, _ = timed(lambda: [judge(c, r) for c, r in zip(completions, references)])
    one_s, _ = timed(lambda: check_math_batch(completions, references, processes=1))
    two_s, _ = timed(lambda: check_math_batch(completions, references, processes=2))

    print(f"\nthroughput over {n} completions (median of 5, pools already started)")
    rows = [
        ("raw math_verify parse/verify loop, 1 process", raw_s),
        ("check_math's judge() in-process loop (no time limit)", loop_s),
        ("check_math_batch, processes=1", one_s),
        ("check_math_batch, processes=2", two_s),
    ]
    for name, seconds in rows:
        print(f"  {name:55s} {seconds:6.3f} s  {n / seconds:8.0f} /s")
    print(f"  (raw loop agrees with labels on {raw_agree}/{n})")
    print(f"\nratio batch(2 processes) vs raw single-process loop: {raw_s / two_s:.2f}x  (target >= 1.6x)")
    print(f"ratio batch(2 processes) vs batch(1 process):        {one_s / two_s:.2f}x")


if __name__ == "__main__":
    main()
