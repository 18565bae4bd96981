"""pass@k (the unbiased estimator of Chen et al. 2021) and maj@k (majority vote over extracted answers)."""

from __future__ import annotations

from collections import Counter
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n, c of them correct, is correct."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_correct(samples: list[dict], k: int) -> bool:
    """The most frequent extracted answer among the first k samples (ties: the earliest), and whether
    the samples giving it were judged correct. A sample with no extracted answer casts no vote."""
    first = sorted(samples, key=lambda s: s["sample_idx"])[:k]
    votes = Counter(s["extracted"] for s in first if s["extracted"] is not None)
    if not votes:
        return False
    top = max(votes.values())
    answer = next(s["extracted"] for s in first if s["extracted"] is not None and votes[s["extracted"]] == top)
    return any(s["passed"] for s in first if s["extracted"] == answer)


def score_benchmark(samples: list[dict], ks: list[int]) -> dict:
    """Per-problem pass@k / maj@k averaged over problems. Problems whose reference could not be checked
    (passed None) are left out and counted."""
    by_problem: dict[str, list[dict]] = {}
    for s in samples:
        by_problem.setdefault(s["problem_id"], []).append(s)
    scored = {pid: ss for pid, ss in by_problem.items() if all(s["passed"] is not None for s in ss)}
    out: dict = {"problems": len(by_problem), "scored_problems": len(scored), "samples": len(samples)}
    for k in sorted(set(ks)):
        passes = [pass_at_k(len(ss), sum(bool(s["passed"]) for s in ss), k) for ss in scored.values() if len(ss) >= k]
        majs = [majority_correct(ss, k) for ss in scored.values() if len(ss) >= k]
        out[f"pass@{k}"] = round(sum(passes) / len(passes), 4) if passes else None
        out[f"maj@{k}"] = round(sum(majs) / len(majs), 4) if majs else None
    tokens = [s["completion_tokens"] or 0 for s in samples]
    out["mean_completion_tokens"] = round(sum(tokens) / len(tokens), 1) if tokens else 0
    out["truncated"] = sum(s["finish_reason"] == "length" for s in samples)
    return out
