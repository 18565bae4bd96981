"""Journey-learning samples: a wrong attempt, a marker that a mistake was found, then the right solution.

"O1 Replication Journey" style data teaches a student to notice and repair its own mistakes. From a
trace of a problem that failed only on its answer (math:wrong_answer, every other check passed) and a
kept right trace of the same problem, the sample's reasoning is the wrong attempt, a marker such as
"Wait, let me check this again.", then the right reasoning; the final answer is the right trace's,
unchanged, so the verifier's answer extraction (which reads after </think>, else the last box) still
finds the right answer.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from factory.curate.select import seeded_hash


def journey_key(wrong_key: str, right_key: str, marker: str) -> str:
    return hashlib.sha256("\0".join(("journey", wrong_key, right_key, marker)).encode()).hexdigest()[:32]


def pick_pairs(wrong: list[dict], right: list[dict], per_problem: int, markers: list[str], seed: int) -> list[dict]:
    """Pairs per problem: wrong traces in seeded order, each with the next kept right trace (best rank first).

    wrong: {trace_key, problem_id}; right: {trace_key, problem_id, rank}.
    """
    rights: dict[str, list[str]] = defaultdict(list)
    for r in sorted(right, key=lambda r: r["rank"]):
        rights[r["problem_id"]].append(r["trace_key"])
    wrongs: dict[str, list[str]] = defaultdict(list)
    for w in wrong:
        if w["problem_id"] in rights:
            wrongs[w["problem_id"]].append(w["trace_key"])
    pairs = []
    for pid in sorted(wrongs):
        ordered = sorted(wrongs[pid], key=lambda k: seeded_hash(seed, k))[:per_problem]
        for j, wkey in enumerate(ordered):
            rkey = rights[pid][j % len(rights[pid])]
            marker = markers[seeded_hash(seed, wkey + rkey) % len(markers)]
            pairs.append({"journey_key": journey_key(wkey, rkey, marker), "problem_id": pid,
                          "wrong_key": wkey, "right_key": rkey, "marker": marker})
    return pairs


def compose(wrong: dict, right: dict, marker: str, key: str) -> dict:
    """The journey row: the right trace's fields, its reasoning prefixed by the wrong attempt and the marker."""
    attempt = (wrong.get("reasoning") or wrong.get("response") or "").strip()
    bridge = f"{attempt}\n\n{marker}\n\n"
    body = right.get("reasoning") or right.get("response") or ""
    completion = right["completion"]
    at = completion.find(body) if body else -1
    at = at if at >= 0 else 0
    row = dict(right)
    row["completion"] = completion[:at] + bridge + completion[at:]
    if right.get("reasoning"):
        row["reasoning"] = bridge + right["reasoning"]
    else:
        row["response"] = bridge + (right.get("response") or "")
    if wrong.get("completion_tokens") and right.get("completion_tokens"):
        row["completion_tokens"] = wrong["completion_tokens"] + right["completion_tokens"]  # the marker's few aside
    else:
        row["completion_tokens"] = None
    row["trace_key"] = key
    row["journey"] = True
    return row
