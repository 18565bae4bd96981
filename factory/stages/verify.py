"""Verify: traces -> traces + one verdict column per verifier, `accepted` and `reject_reason`.

The checks themselves live in the standalone `verifiers` package; this stage maps them over Ray Data
batches and applies the pipeline's acceptance policy.
"""

from __future__ import annotations

import json
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
    """The acceptance policy: the first verdict that fails names the reason.

    passed=None (could not be checked) is not a failure, except for the correctness checks (math,
    code) whose `unverifiable` setting says to reject such traces.
    """
    if row.get("error") or row.get("completion") is None:
        return False, "generation_error"
    strict_none = {name for name in ("math", "code") if getattr(settings, name).unverifiable == "reject"}
    for name in VERIFIERS:
        v = row.get(f"verdict_{name}")
        if v is None:
            continue
        if v["passed"] is False or (v["passed"] is None and name in strict_none):
            return False, f"{name}:{v['reason']}"
    return True, None


def _language_target(row: dict) -> str | None:
    from verifiers import detect_language

    return row.get("language") or detect_language(row["problem"])


def verify_rows(rows: list[dict], settings: VerifyConfig) -> list[dict]:
    from verifiers import (
        check_code_batch,
        check_format,
        check_language,
        check_math_batch,
        check_repetition,
        check_truncation,
        split_think,
    )

    verdicts: dict[str, dict[int, object]] = {name: {} for name in VERIFIERS}
    live = [i for i, r in enumerate(rows) if r.get("completion") is not None]
    quality = settings.quality
    for i in live:
        row = rows[i]
        completion = row["completion"]
        if row.get("response") is None:
            row["reasoning"], row["response"] = split_think(completion)
        text = f"{row['reasoning'] or ''}\n{row['response'] or ''}"
        # Direct-mode traces answer without a think block by design (teacher.mode / a source's mode).
        require_think = settings.require_think and row.get("mode") != "direct"
        verdicts["format"][i] = check_format(completion, require_think=require_think)
        if quality.reject_truncated:
            verdicts["truncation"][i] = check_truncation(completion, row.get("finish_reason"))
        verdicts["repetition"][i] = check_repetition(text, n=quality.repetition_ngram, max_share=quality.max_repeated_share)
        if settings.language.enabled and (target := _language_target(row)):
            verdicts["language"][i] = check_language(text, target, min_share=settings.language.min_share)

    math_idx = [i for i in live if rows[i].get("domain") == "math"]
    found = check_math_batch(
        [rows[i]["completion"] for i in math_idx],
        [rows[i].get("answer") for i in math_idx],
        processes=settings.processes,
        timeout_s=settings.math.timeout_s,
    )
    verdicts["math"].update(zip(math_idx, found))
    code_idx = [i for i in live if rows[i].get("domain") == "code"]
    found = check_code_batch(
        [rows[i]["completion"] for i in code_idx],
        [json.loads(rows[i]["tests"]) if rows[i].get("tests") else None for i in code_idx],
        threads=settings.code.threads,
    )
    verdicts["code"].update(zip(code_idx, found))

    for i, row in enumerate(rows):
        for name in VERIFIERS:
            row[f"verdict_{name}"] = _verdict(verdicts[name].get(i))
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
    """Counts for stats.json: accepted, each reject reason, and pass/fail/none and reasons per verifier."""
    cols = ["accepted", "reject_reason"] + [f"verdict_{n}" for n in VERIFIERS]
    rows = run.read_stage(STAGE, columns=cols).to_pylist()
    verdicts = {}
    for name in VERIFIERS:
        counts: Counter = Counter()
        for r in rows:
            v = r[f"verdict_{name}"]
            if v is not None:
                counts[{True: "pass", False: "fail", None: "none"}[v["passed"]]] += 1
                counts[f"reason:{v['reason']}"] += 1
        if counts:
            verdicts[name] = dict(sorted(counts.items()))
    return {
        "in": len(rows),
        "out": sum(1 for r in rows if r["accepted"]),
        "rejected": reasons(r["reject_reason"] for r in rows if not r["accepted"]),
        "verdicts": verdicts,
    }
