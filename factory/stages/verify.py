"""Verify: traces -> traces + one verdict column per verifier, `accepted` and `reject_reason`.

The checks themselves live in the standalone `verifiers` package; this stage maps them over Ray Data
batches and applies the pipeline's acceptance policy.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from factory.config import VerifyConfig
from factory.records import VERIFIED_SCHEMA, VERIFIERS, table
from factory.stats import reasons
from factory.storage import SUCCESS, RunDir

STAGE = "verify"
INCREMENTS = f"{STAGE}/_INCREMENTS.json"  # which generate part files verify/ covers; see `unverified`
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


def unverified(run: RunDir, settings_key: str, parts: list[str]) -> list[str]:
    """The generate part files that verify/ does not cover yet under these settings.

    verify/ grows by increments, so a rejection-sampling round or a re-run after more generation
    verifies only the new traces (at 600K traces a full pass is the cost of a whole round). An
    increment is written aside, moved in under its own name prefix, and only then recorded in
    _INCREMENTS.json: files of an increment a kill left unrecorded are removed here. Other settings,
    or a generate part that is gone, start verify/ over.
    """
    record = run.read_json(INCREMENTS)
    names = [posixpath.basename(p) for p in parts]
    done = {n for covered in (record or {}).get("increments", {}).values() for n in covered}
    if record is None or record["settings"] != settings_key or not done <= set(names):
        run.reset_stage(STAGE)
        return parts
    for path in run.ls(STAGE):
        name = posixpath.basename(path)
        if name.startswith("_inc-") or (name.endswith(".parquet") and name.partition("--")[0] not in record["increments"]):
            run.fs.rm(path, recursive=True)
    return [p for p, n in zip(parts, names) if n not in done]


def run_verify(settings: VerifyConfig, run: RunDir, ds, settings_key: str | None = None,
               parts: list[str] | None = None) -> dict:
    """Verify a Ray dataset of traces into run_dir/verify as one increment; returns the stage's stats entry.

    `parts`: the generate part files ds reads (from `unverified`), recorded as covered, with
    `settings_key`. Without them (traces from --input) verify/ is replaced and nothing is recorded.
    """
    if parts is None:
        run.reset_stage(STAGE)
    elif run.exists(STAGE, SUCCESS):  # verify/ is being changed: not a finished stage until marked again
        run.fs.rm(run.path(STAGE, SUCCESS))
    increment = uuid.uuid4().hex[:12]
    aside = f"{STAGE}/_inc-{increment}"  # "_": readers of verify/ skip it
    if parts is None or parts:
        verified = ds.map_batches(
            verify_batch,
            fn_kwargs={"settings": settings},
            batch_format="pyarrow",
            batch_size=BATCH_SIZE,
            num_cpus=settings.processes,
        )
        verified.write_parquet(run.path(aside), filesystem=run.fs, compression="zstd")
    new = 0
    written = run.parts(aside)
    for path in written:
        new += pq.ParquetFile(path, filesystem=run.fs).metadata.num_rows
        run.fs.mv(path, run.path(STAGE, f"{increment}--{posixpath.basename(path)}"))
    if written:
        run.reset_stage(aside)
    if parts is not None:
        record = run.read_json(INCREMENTS) or {"settings": settings_key, "increments": {}}
        record["increments"][increment] = [posixpath.basename(p) for p in parts]
        run.write_json(INCREMENTS, record)
    return {**summarize(run), "verified_now": new}


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
