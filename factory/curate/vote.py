"""Majority vote: a pseudo-label for math problems without a reference answer.

Each trace's final answer (found the way the math verifier finds it) is one vote. Answers are grouped
by equivalence, not by spelling: distinct answers of a problem are compared pairwise with Math-Verify
("1/2", "\\frac{1}{2}" and "0.5" are one answer), in Ray tasks under the verifier's hard time limit.
The largest group wins when it holds at least `min_share` of the problem's traces (a trace without an
answer counts against it) and no other group is as large; its traces are kept with the answer as a
pseudo-label, the others are dropped with a reason.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import pyarrow as pa

from factory.config import MajorityVoteConfig

_NOISE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\displaystyle")
PAIR_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string())])


def vote_answer(completion: str | None) -> str | None:
    """The trace's final answer, lightly normalised for grouping; None when it gives none."""
    from verifiers.math_extract import extract_answer

    found = extract_answer(completion or "")
    if found is None:
        return None
    text = " ".join(_NOISE.sub("", found.text).split()).strip("$.").strip()
    return text or None


def equivalent_batch(batch: pa.Table, timeout_s: float) -> pa.Table:
    from verifiers import check_math_batch

    a, b = batch.column("a").to_pylist(), batch.column("b").to_pylist()
    verdicts = check_math_batch([f"\\boxed{{{x}}}" for x in a], b, timeout_s=timeout_s)
    return batch.append_column("same", pa.array([v.passed is True for v in verdicts], pa.bool_()))


def equivalent_pairs(pairs: set[tuple[str, str]], timeout_s: float) -> set[tuple[str, str]]:
    """Which (a, b) answer pairs Math-Verify finds equal; checked on Ray, one worker process per task."""
    if not pairs:
        return set()
    import ray

    table = pa.Table.from_pylist([{"a": a, "b": b} for a, b in sorted(pairs)], schema=PAIR_SCHEMA)
    checked = ray.data.from_arrow(table).map_batches(
        equivalent_batch, fn_kwargs={"timeout_s": timeout_s}, batch_format="pyarrow", batch_size=512, num_cpus=1
    )
    out = pa.concat_tables(ray.get(checked.to_arrow_refs()))
    return {(r["a"], r["b"]) for r in out.to_pylist() if r["same"]}


@dataclass
class Outcome:
    label: str | None  # the pseudo-label, or None when the problem got none
    reason: str | None  # why it got none: "vote:too_few_votes" | "vote:no_majority"
    share: float  # the majority group's share of the problem's traces
    agreeing: set[str]  # trace keys whose answer is the label


def _groups(answers: Counter, same: set[tuple[str, str]]) -> list[tuple[int, str, set[str]]]:
    """Equivalent answers joined (union-find over the checked pairs): (votes, most frequent spelling, members)."""
    parent = {a: a for a in answers}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in same:
        if a in parent and b in parent:
            parent[root(a)] = root(b)
    members: dict[str, set[str]] = defaultdict(set)
    for a in answers:
        members[root(a)].add(a)
    groups = []
    for group in members.values():
        spelling = max(sorted(group), key=lambda a: answers[a])
        groups.append((sum(answers[a] for a in group), spelling, group))
    return sorted(groups, key=lambda g: (-g[0], g[1]))


def majority_vote(rows: list[dict], settings: MajorityVoteConfig) -> dict[str, Outcome]:
    """rows: {trace_key, problem_id, vote_answer} of the traces that vote; the outcome per problem."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_problem[r["problem_id"]].append(r)
    pairs = set()
    for traces in by_problem.values():
        distinct = sorted({r["vote_answer"] for r in traces if r["vote_answer"] is not None})
        pairs.update((a, b) for i, a in enumerate(distinct) for b in distinct[i + 1 :])
    same = equivalent_pairs(pairs, settings.timeout_s)

    outcomes = {}
    for pid, traces in by_problem.items():
        answers = Counter(r["vote_answer"] for r in traces if r["vote_answer"] is not None)
        if sum(answers.values()) < settings.min_votes:
            outcomes[pid] = Outcome(None, "vote:too_few_votes", 0.0, set())
            continue
        groups = _groups(answers, same)
        votes, label, members = groups[0]
        share = votes / len(traces)
        tied = len(groups) > 1 and groups[1][0] == votes
        if tied or share < settings.min_share:
            outcomes[pid] = Outcome(None, "vote:no_majority", share, set())
            continue
        agreeing = {r["trace_key"] for r in traces if r["vote_answer"] in members}
        outcomes[pid] = Outcome(label, None, share, agreeing)
    return outcomes
