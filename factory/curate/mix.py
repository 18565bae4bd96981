"""Mixing: targets per mode (reasoning vs direct) and domain, in rows or tokens, R1-style.

DeepSeek-R1 distilled on about 600K reasoning and 200K non-reasoning samples. A target is a ceiling
filled in the selection's fill order; a target the corpus cannot fill is reported as short (with how
much is missing) rather than failing the run, because the right fix (more problems, more samples)
is upstream. Rows of a mode or domain no target names are kept whole.
"""

from __future__ import annotations

from collections import defaultdict

from factory.config import MixConfig

ALL_DOMAINS = "*"


def _bucket(targets: dict, mode: str, domain: str) -> tuple[str, str] | None:
    spec = targets.get(mode)
    if spec is None:
        return None
    if isinstance(spec, int):
        return (mode, ALL_DOMAINS)
    return (mode, domain) if domain in spec else None


def _target(targets: dict, bucket: tuple[str, str]) -> int:
    spec = targets[bucket[0]]
    return spec if isinstance(spec, int) else spec[bucket[1]]


def apply_mix(order: list[int], modes: list[str], domains: list[str], tokens: list[int], settings: MixConfig):
    """Keep rows in fill order up to each target; returns (kept indexes, report for stats.json)."""
    targets = settings.targets
    amount = (lambda i: 1) if settings.unit == "rows" else (lambda i: tokens[i])
    available: dict = defaultdict(int)
    for i in order:
        if (b := _bucket(targets, modes[i], domains[i])) is not None:
            available[b] += amount(i)
    used: dict = defaultdict(int)
    closed: set = set()
    kept, composition = [], defaultdict(lambda: {"rows": 0, "tokens": 0})
    for i in order:
        b = _bucket(targets, modes[i], domains[i])
        if b is not None:
            if b in closed or used[b] + amount(i) > _target(targets, b):
                closed.add(b)  # stop at the first row that does not fit: the fill order is the priority
                continue
            used[b] += amount(i)
        kept.append(i)
        slot = composition[f"{modes[i]}/{domains[i]}"]
        slot["rows"] += 1
        slot["tokens"] += tokens[i]

    report_targets = []
    for mode, spec in targets.items():
        names = [ALL_DOMAINS] if isinstance(spec, int) else list(spec)
        for domain in names:
            b = (mode, domain)
            target = _target(targets, b)
            report_targets.append({"mode": mode, "domain": domain, "unit": settings.unit, "target": target,
                                   "available": available[b], "taken": used[b],
                                   "short_by": max(0, target - available[b])})
    return kept, {
        "unit": settings.unit,
        "targets": report_targets,
        "short": [t for t in report_targets if t["short_by"] > 0],
        "composition": dict(sorted(composition.items())),
    }
