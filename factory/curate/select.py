"""Selection: which traces of a problem come first, how many stay, and the fill order under caps/targets.

This runs on the driver over the per-trace metadata table (ids, lengths, small signatures: no trace
text), a few hundred bytes a trace, so plain Python over columns is enough; only the text-heavy steps
before it (dedup, decontamination, answer extraction) run on Ray.

Ranks: within a problem, rank 0 is the trace to keep first. The fill order used by caps and mix
targets is "every problem's rank 0, then every rank 1, ...", problems in a seeded random order, so a
cap or a target trims the extra samples of many problems before it drops any problem entirely.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import numpy as np

from factory.config import CapsConfig


def seeded_hash(seed: int, key: str) -> int:
    """A stable pseudo-random number per (seed, key): the same choices on every run and machine."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "big")


def _diverse_order(order: list[int], signatures: list) -> list[int]:
    """Farthest-first: start from the first (shortest) trace, then always the one least like those chosen."""
    if len(order) <= 2:
        return order
    sigs = np.array([signatures[i] for i in order])
    chosen = [0]
    closest = (sigs == sigs[0]).mean(axis=1)  # highest estimated Jaccard to any chosen trace
    closest[0] = np.inf
    for _ in range(len(order) - 1):
        nxt = int(np.argmin(closest))
        chosen.append(nxt)
        closest = np.maximum(closest, (sigs == sigs[nxt]).mean(axis=1))
        closest[chosen] = np.inf
    return [order[i] for i in chosen]


def rank_within_problem(
    problem_ids: list[str], keys: list[str], tokens: list[int], rule: str, seed: int, signatures: list | None = None
) -> list[int]:
    """Rank of each row inside its problem under `rule` (shortest | random | diverse)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, pid in enumerate(problem_ids):
        groups[pid].append(i)
    ranks = [0] * len(problem_ids)
    for rows in groups.values():
        if rule == "random":
            order = sorted(rows, key=lambda i: seeded_hash(seed, keys[i]))
        else:
            order = sorted(rows, key=lambda i: (tokens[i], keys[i]))
            if rule == "diverse":
                order = _diverse_order(order, signatures)
        for rank, i in enumerate(order):
            ranks[i] = rank
    return ranks


def fill_order(problem_ids: list[str], ranks: list[int], seed: int) -> list[int]:
    """Row indexes in fill order: rank first, then a seeded order of problems."""
    return sorted(range(len(ranks)), key=lambda i: (ranks[i], seeded_hash(seed, problem_ids[i])))


def apply_caps(order: list[int], sources: list[str], domains: list[str], caps: CapsConfig) -> tuple[list[int], dict[int, str]]:
    """Walk the fill order, keeping a row while its source and domain are under their caps.

    Returns the kept rows (in fill order) and the dropped ones with their reason (cap:source / cap:domain).
    """
    used: Counter = Counter()
    kept, dropped = [], {}
    for i in order:
        over = [kind for kind, name, limits in (("source", sources[i], caps.source), ("domain", domains[i], caps.domain))
                if name in limits and used[(kind, name)] >= limits[name]]
        if over:
            dropped[i] = f"cap:{over[0]}"
            continue
        used[("source", sources[i])] += 1
        used[("domain", domains[i])] += 1
        kept.append(i)
    return kept, dropped
