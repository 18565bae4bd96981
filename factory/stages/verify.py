"""Verify: traces -> traces + one verdict column per verifier, `accepted` and `reject_reason`.

The checks themselves live in the standalone `verifiers` package; this stage maps them over Ray Data
batches and applies the pipeline's acceptance policy.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from factory.config import VerifyConfig
from factory.records import VERIFIED_SCHEMA, VERIFIERS, table
from factory.stats import reasons
from factory.storage import RunDir

STAGE = "verify"
BATCH_SIZE = 256


def _verdict(v) -> dict | None:
    return None if v is None else {"passed": v.passed, "reason": v.reason, "score": v.score, "extracted": v.extracted}


def decide(row: dict, settings: VerifyConfig) -> tuple[bool, str | None]:
    """The acceptance policy: the first verdict that fails names the reason."""
    if row.get("error") or row.get("completion") is None:
        return False, "generation_error"
    for name in VERIFIERS:
        v = row.get(f"verdict_{name}")
        if v is None:
            continue
        if v["passed"] is False:
            return False, f"{name}:{v['reason']}"
        if v["passed"] is None and name == "math" and settings.math.unverifiable == "reject":
            return False, f"{name}:{v['reason']}"
    return True, None


def verify_rows(rows: list[dict], settings: VerifyConfig) -> list[dict]:
    from verifiers import check_format, check_math_batch, split_think

    math_idx = [i for i, r in enumerate(rows) if r.get("domain") == "math" and r.get("completion") is not None]
    math_verdicts = check_math_batch(
        [rows[i]["completion"] for i in math_idx],
        [rows[i].get("answer") for i in math_idx],
        processes=settings.processes,
        timeout_s=settings.math.timeout_s,
    )
    by_row = dict(zip(math_idx, math_verdicts))
    for i, row in enumerate(rows):
        completion = row.get("completion")
        if completion is not None and row.get("response") is None:
            row["reasoning"], row["response"] = split_think(completion)
        row["verdict_format"] = (
            _verdict(check_format(completion, require_think=settings.require_think)) if completion is not None else None
        )
        row["verdict_math"] = _verdict(by_row.get(i))
        row["accepted"], row["reject_reason"] = decide(row, settings)
    return rows


def verify_batch(batch: pa.Table, settings: VerifyConfig) -> pa.Table:
    return table(verify_rows(batch.to_pylist(), settings), VERIFIED_SCHEMA)


def run_verify(settings: VerifyConfig, run: RunDir, ds) -> dict:
    """Verify a Ray dataset of traces into run_dir/verify; returns the stage's stats entry."""
    run.reset_stage(STAGE)  # a half-written verify is cheaper to redo than to reconcile
    verified = ds.map_batches(
        verify_batch,
        fn_kwargs={"settings": settings},
        batch_format="pyarrow",
        batch_size=BATCH_SIZE,
        num_cpus=settings.processes,
    )
    verified.write_parquet(run.path(STAGE), filesystem=run.fs, compression="zstd")
    return summarize(run)


def summarize(run: RunDir) -> dict:
    cols = ["accepted", "reject_reason"] + [f"verdict_{n}" for n in VERIFIERS]
    rows = run.read_stage(STAGE, columns=cols).to_pylist()
    accepted = sum(1 for r in rows if r["accepted"])
    verdicts = {}
    for name in VERIFIERS:
        counts: Counter = Counter()
        for r in rows:
            v = r[f"verdict_{name}"]
            if v is not None:
                counts[{True: "pass", False: "fail", None: "none"}[v["passed"]]] += 1
                counts[f"reason:{v['reason']}"] += 1
        verdicts[name] = dict(sorted(counts.items()))
    return {
        "in": len(rows),
        "out": accepted,
        "rejected": reasons(r["reject_reason"] for r in rows if not r["accepted"]),
        "verdicts": verdicts,
    }
