"""Curate: verify/ -> curate/, the traces worth training on.

Order: problem dedup (exact, then near) -> decontamination -> majority vote for problems without a
reference -> response dedup -> pass-rate filter -> per-problem selection -> caps -> journey samples
-> mix targets. Every removed trace goes to rejects/curate.jsonl with its reason; benchmark hits go to
curate/_contamination.jsonl; counts go to stats.json's `curate` entry.

What runs where: work that reads trace text (answer extraction, signatures, n-gram matching, dedup,
journey composition, the final write) is a Ray Data operation streamed over the corpus. The decisions
in between run on the driver over a per-trace metadata table (keys, lengths, answers: no text), which
stays small next to the traces themselves.

Which verify rows take part: accepted traces; traces that failed only because their problem has no
reference answer (`math:no_reference`, every other check passed) when majority vote is on, since the
vote is their correctness check; and, for journey samples, traces that failed only on a wrong answer.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory.config import DedupConfig, PipelineConfig, VerifyConfig
from factory.curate.decontaminate import benchmark_files, build_index, fetch_once, find_contamination
from factory.curate.journey import compose, pick_pairs
from factory.curate.mix import apply_mix
from factory.curate.select import apply_caps, fill_order, rank_within_problem
from factory.curate.vote import majority_vote, vote_answer
from factory.records import VERIFIED_SCHEMA, table
from factory.stages.verify import decide
from factory.storage import RunDir

STAGE = "curate"
CONTAMINATION_FILE = f"{STAGE}/_contamination.jsonl"  # "_": ignored by Parquet dataset readers
UPSTREAM_FILE = f"{STAGE}/_UPSTREAM"  # the verify marker curate/ was made from (shard checks it)
DIVERSITY_PERM = 32  # MinHash size for the `diverse` rule: enough to order a handful of traces
CHARS_PER_TOKEN = 4  # token estimate for traces that came without token counts
EXAMPLES_PER_BENCHMARK = 5

_EXTRA = [("pass_rate", pa.float64()), ("pseudo_label", pa.bool_()), ("journey", pa.bool_())]
_MODE = [] if "mode" in VERIFIED_SCHEMA.names else [("mode", pa.string())]
CURATED_SCHEMA = pa.schema(list(VERIFIED_SCHEMA) + _MODE + _EXTRA)

META_SCHEMA = pa.schema(
    [
        ("trace_key", pa.string()),
        ("problem_id", pa.string()),
        ("sample_idx", pa.int32()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("mode", pa.string()),
        ("status", pa.string()),  # accepted | vote | wrong | rejected
        ("tokens", pa.int64()),
        ("vote_answer", pa.string()),
        ("signature", pa.list_(pa.uint32())),
        ("hits", pa.string()),  # JSON list of benchmark hits on the trace's answer (decontaminate.fields)
    ]
)


# --- Ray Data passes over the traces ----------------------------------------------------------------


def _lenient(settings: VerifyConfig) -> VerifyConfig:
    """The verify policy with a missing reference not held against a trace (the vote checks it instead)."""
    return settings.model_copy(update={"math": settings.math.model_copy(update={"unverifiable": "accept"})})


def trace_status(row: dict, settings: VerifyConfig, vote: bool) -> str:
    math = row.get("verdict_math")
    if vote and math and math["reason"] == "no_reference" and decide(row, _lenient(settings))[0]:
        return "vote"
    if row["accepted"]:
        return "accepted"
    if math and math["passed"] is False and math["reason"] == "wrong_answer" and decide({**row, "verdict_math": None}, settings)[0]:
        return "wrong"
    return "rejected"


def num_tokens(row: dict) -> int:
    if row.get("completion_tokens"):
        return (row.get("prompt_tokens") or 0) + row["completion_tokens"]
    return (len(row.get("problem") or "") + len(row.get("completion") or "")) // CHARS_PER_TOKEN


def meta_batch(batch: pa.Table, settings: VerifyConfig, vote: bool, diversity_ngram: int | None,
               hit_fields: list[str], index) -> pa.Table:
    """The per-trace metadata the driver decides on; text-derived parts (answers, signatures, hits) made here."""
    rows = batch.to_pylist()
    out = []
    for r in rows:
        status = trace_status(r, settings, vote)
        out.append({
            "trace_key": r["trace_key"], "problem_id": r["problem_id"], "sample_idx": r["sample_idx"],
            "source": r.get("source") or "", "domain": r.get("domain") or "", "mode": r.get("mode") or "reasoning",
            "status": status, "tokens": num_tokens(r),
            "vote_answer": vote_answer(r["completion"]) if status == "vote" else None,
        })
    live = [i for i, o in enumerate(out) if o["status"] in ("accepted", "vote")]
    if diversity_ngram:
        from factory.curate.minhash import signatures

        sigs = signatures([rows[i]["completion"] or "" for i in live], num_perm=DIVERSITY_PERM, ngram=diversity_ngram)
        for i, sig in zip(live, sigs):
            out[i]["signature"] = sig.tolist()
    if hit_fields:
        idx = fetch_once(index)
        for i in live:
            hits = {}
            for f in hit_fields:
                for h in idx.match(rows[i].get(f) or ""):
                    hits.setdefault(h["benchmark"], h)
            out[i]["hits"] = json.dumps(list(hits.values()), ensure_ascii=False) if hits else None
    return pa.Table.from_pylist(out, schema=META_SCHEMA)


def select_keys(batch: pa.Table, keys, columns: list[str]) -> pa.Table:
    return batch.filter(pc.is_in(batch.column("trace_key"), value_set=fetch_once(keys))).select(columns)


def curated_batch(batch: pa.Table, decisions) -> pa.Table:
    """The kept rows, marked: accepted by curation, pass rate, pseudo-label (which fills `answer`)."""
    decided = fetch_once(decisions)
    rows = []
    for r in batch.to_pylist():
        d = decided.get(r["trace_key"])
        if d is None:
            continue
        pass_rate, label = d
        r.update(accepted=True, reject_reason=None, pass_rate=pass_rate, pseudo_label=label is not None,
                 journey=False, mode=r.get("mode") or "reasoning")
        if label is not None:
            r["answer"] = label
        rows.append(r)
    return table(rows, CURATED_SCHEMA)


def journey_group(group: pa.Table, pairs) -> pa.Table:
    """One journey: the group holds its wrong and its right trace (tagged by `_role`)."""
    pair_info = fetch_once(pairs)
    rows = {r["_role"]: r for r in group.to_pylist()}
    pair = pair_info[rows["right"]["_journey"]]
    row = compose(rows["wrong"], rows["right"], pair["marker"], pair["journey_key"])
    row.update(accepted=True, reject_reason=None, pseudo_label=False, pass_rate=pair["pass_rate"],
               mode=row.get("mode") or "reasoning")
    return table([row], CURATED_SCHEMA)


def journey_roles(batch: pa.Table, roles) -> pa.Table:
    """Each trace once per journey it plays a part in, tagged with the journey and its role."""
    role_of = fetch_once(roles)
    out = []
    for r in batch.to_pylist():
        for journey, role in role_of.get(r["trace_key"], ()):
            out.append({**r, "_journey": journey, "_role": role})
    schema = batch.schema.append(pa.field("_journey", pa.string())).append(pa.field("_role", pa.string()))
    return pa.Table.from_pylist(out, schema=schema)


# --- driver-side steps ------------------------------------------------------------------------------


def _collect(ds) -> pa.Table:
    import ray

    return pa.concat_tables(ray.get(ds.to_arrow_refs()), promote_options="default")


def _cluster_losers(mapping: dict, size: dict[str, int], keep: str, same_group: dict[str, str] | None = None) -> set[str]:
    """Members of each duplicate cluster other than the one kept (smallest id, or smallest size)."""
    clusters: dict = defaultdict(list)
    for member, rep in mapping.items():
        clusters[(rep, same_group[member]) if same_group else rep].append(member)
    losers = set()
    for members in clusters.values():
        ordered = sorted(members, key=(lambda m: (size[m], m)) if keep == "shortest" else (lambda m: m))
        losers.update(ordered[1:])
    return losers


def _losers(exact: dict, near: dict, size: dict[str, int], keep: str, group: dict | None = None) -> tuple[set, set]:
    """(exact losers, near losers) from the engine's {id: representative} maps. An exact copy is also a
    near one, so the near clusters are judged without the exact losers."""
    exact_losers = _cluster_losers(exact, size, keep, group)
    near = {m: rep for m, rep in near.items() if m not in exact_losers}
    return exact_losers, _cluster_losers(near, size, keep, group)


def response_duplicates(ds, d: DedupConfig, size: dict[str, int], group: dict[str, str]) -> tuple[set, set]:
    """Duplicate completions among the rows of ds (trace_key, completion), through the dedup engine on Ray.

    Each pass streams the texts from the Parquet files again rather than materializing them once: the
    live traces' texts would sit in Ray's object store, which grows with the corpus (~20 KB a trace, 10 GB
    at 600K traces, then spilled to disk), while what the passes keep is ~0.7 KB a trace
    (bench/bench_curate_scale.py)."""
    from factory.curate.dedup import exact_duplicates, near_duplicates

    exact = exact_duplicates(ds, text_column="completion", id_column="trace_key").representative if d.exact else {}
    near = {}
    if d.near:
        near = near_duplicates(ds, text_column="completion", id_column="trace_key", threshold=d.threshold,
                               num_perm=d.num_perm, ngram=d.ngram).representative
    return _losers(exact, near, size, d.keep, group)


def problem_duplicates(problems: pa.Table, d: DedupConfig, size: dict[str, int]) -> tuple[set, set]:
    """Duplicate problems, with the dedup engine's in-memory form: problems are few and short next to
    traces, and already on the driver."""
    from factory.curate.dedup import exact_duplicates_local, near_duplicates_local

    ids, texts = problems.column("problem_id").to_pylist(), problems.column("problem").to_pylist()
    exact = exact_duplicates_local(texts, ids).representative if d.exact else {}
    near = {}
    if d.near:
        near = near_duplicates_local(texts, ids, threshold=d.threshold, num_perm=d.num_perm, ngram=d.ngram).representative
    return _losers(exact, near, size, d.keep)


def duplicate_problems_per_mode(t: "Traces", problems: pa.Table, d: DedupConfig) -> dict[tuple[str, str], str]:
    """(problem_id, mode) -> exact_dup_problem | near_dup_problem, for the copies of a problem stated twice.

    Within one mode only: a problem answered with reasoning by one source and directly by another
    (R1's non-reasoning share) is two samples, not a duplicate.
    """
    modes: dict[str, set[str]] = defaultdict(set)
    for i in t.live:
        modes[t.col["problem_id"][i]].add(t.col["mode"][i])
    size = dict(zip(problems.column("problem_id").to_pylist(), pc.utf8_length(problems.column("problem")).to_pylist()))
    found: dict[tuple[str, str], str] = {}
    for mode in sorted({m for ms in modes.values() for m in ms}):
        group = problems.filter(pc.is_in(problems.column("problem_id"), pa.array([p for p, ms in modes.items() if mode in ms], pa.string())))
        if group.num_rows > 1:
            exact, near = problem_duplicates(group, d, size)
            found.update({(p, mode): "exact_dup_problem" for p in exact} | {(p, mode): "near_dup_problem" for p in near})
    return found


def distinct_problems(paths: list[str], fs, wanted: set[str]) -> pa.Table:
    """(problem_id, problem) once per wanted problem: two columns read part by part, no trace text."""
    seen: dict[str, str] = {}
    for path in paths:
        part = pq.read_table(path, filesystem=fs, columns=["problem_id", "problem"])
        for pid, text in zip(part.column("problem_id").to_pylist(), part.column("problem").to_pylist()):
            if pid in wanted and pid not in seen:
                seen[pid] = text or ""
    return pa.table({"problem_id": list(seen), "problem": list(seen.values())})


def _example(hit: dict, text: str) -> dict:
    keep = ("problem_id", "trace_key", "field", "item_id", "item", "kind", "shared_ngrams", "overlap", "ngram")
    return {"text": text[:200], **{k: hit[k] for k in keep if k in hit}}


@dataclass
class Traces:
    """The per-trace metadata table as columns, which rows still take part, and why the others left."""

    col: dict[str, list]
    live: set[int] = field(default_factory=set)
    removed: dict[int, str] = field(default_factory=dict)  # row -> reason; the first reason wins

    def __post_init__(self):
        self.live = {i for i, s in enumerate(self.col["status"]) if s in ("accepted", "vote")}
        self.row_of = {k: i for i, k in enumerate(self.col["trace_key"])}
        self.rows_of: dict[str, list[int]] = defaultdict(list)
        for i, pid in enumerate(self.col["problem_id"]):
            self.rows_of[pid].append(i)

    def drop(self, rows, reason: str) -> None:
        for i in rows:
            if i in self.live and i not in self.removed:
                self.removed[i] = reason

    def alive(self) -> list[int]:
        return sorted(i for i in self.live if i not in self.removed)

    def values(self, name: str, rows) -> list:
        return [self.col[name][i] for i in rows]


def decontaminate_step(t: Traces, problems: pa.Table, gone: dict[str, str], deco, index, index_ref, hit_fields, run) -> dict:
    """Benchmark hits on the problems (a Ray pass) and on the answers (found in the metadata pass)."""
    import ray

    remaining = problems.filter(pc.invert(pc.is_in(problems.column("problem_id"), pa.array(list(gone), pa.string()))))
    texts = dict(zip(remaining.column("problem_id").to_pylist(), remaining.column("problem").to_pylist()))
    found = []
    if "problem" in deco.fields:
        for h in find_contamination(ray.data.from_arrow(remaining), ["problem"], "problem_id", index_ref).to_pylist():
            gone.setdefault(h["id"], "contaminated")
            found.append({"field": "problem", "problem_id": h["id"], **{k: v for k, v in h.items() if k != "id"}})
    for i in sorted(t.live):
        if t.col["hits"][i] and t.col["problem_id"][i] not in gone:
            t.drop([i], "contaminated")
            for h in json.loads(t.col["hits"][i]):
                found.append({"field": "+".join(hit_fields), "problem_id": t.col["problem_id"][i],
                              "trace_key": t.col["trace_key"][i], **h})
    run.write_text(CONTAMINATION_FILE, "".join(json.dumps(h, ensure_ascii=False) + "\n" for h in found))
    per_bench = {name: {"items": size, "hits": 0, "examples": []} for name, size in index.sizes().items()}
    for h in found:
        b = per_bench[h["benchmark"]]
        b["hits"] += 1
        if len(b["examples"]) < EXAMPLES_PER_BENCHMARK:
            b["examples"].append(_example(h, texts.get(h["problem_id"], "")))
    return {"ngram": deco.ngram, "fuzzy_share": deco.fuzzy_share, "fields": deco.fields, "benchmarks": per_bench}


def vote_step(t: Traces, settings) -> tuple[dict[int, str], dict | None]:
    """Pseudo-labels for the traces of problems without a reference: {row: label}, and the stats entry."""
    voters = [i for i in t.alive() if t.col["status"][i] == "vote"]
    if not voters:
        return {}, None
    outcomes = majority_vote([{"trace_key": t.col["trace_key"][i], "problem_id": t.col["problem_id"][i],
                               "vote_answer": t.col["vote_answer"][i]} for i in voters], settings)
    labels = {}
    for i in voters:
        o = outcomes[t.col["problem_id"][i]]
        if t.col["trace_key"][i] in o.agreeing:
            labels[i] = o.label
        else:
            t.drop([i], o.reason or "vote:disagrees")
    return labels, {
        "problems": len(outcomes),
        "labelled": sum(o.label is not None for o in outcomes.values()),
        "no_majority": sum(o.reason == "vote:no_majority" for o in outcomes.values()),
        "too_few_votes": sum(o.reason == "vote:too_few_votes" for o in outcomes.values()),
        "traces_labelled": len(labels),
    }


def response_dedup_step(t: Traces, ds, d: DedupConfig) -> dict | None:
    import ray

    alive = t.alive()
    if len(alive) < 2:
        return None
    keys = ray.put(pa.array(t.values("trace_key", alive), pa.string()))
    texts = ds.map_batches(select_keys, fn_kwargs={"keys": keys, "columns": ["trace_key", "completion"]},
                           batch_format="pyarrow", num_cpus=0.5)
    size = dict(zip(t.values("trace_key", alive), t.values("tokens", alive)))
    group = dict(zip(t.values("trace_key", alive), t.values("problem_id", alive)))
    exact, near = response_duplicates(texts, d, size, group)
    t.drop([t.row_of[k] for k in exact], "exact_dup_response")
    t.drop([t.row_of[k] for k in near], "near_dup_response")
    return {"exact": len(exact), "near": len(near)}


def select_step(t: Traces, sel, pass_rate: dict[str, float]) -> tuple[list[int], dict[int, int]]:
    """Difficulty band, k per problem, caps: the kept rows in fill order, and each row's rank in its problem."""
    for i in t.alive():
        if not sel.min_pass_rate <= pass_rate[t.col["problem_id"][i]] <= sel.max_pass_rate:
            t.drop([i], "pass_rate")
    alive = t.alive()
    ranks = rank_within_problem(t.values("problem_id", alive), t.values("trace_key", alive), t.values("tokens", alive),
                                sel.rule, sel.seed, t.values("signature", alive) if sel.rule == "diverse" else None)
    rank = dict(zip(alive, ranks))
    if sel.per_problem is not None:
        t.drop([i for i in alive if rank[i] >= sel.per_problem], "selection")
    alive = t.alive()
    order = [alive[j] for j in fill_order(t.values("problem_id", alive), [rank[i] for i in alive], sel.seed)]
    kept, capped = apply_caps(order, t.col["source"], t.col["domain"], sel.caps)
    for i, reason in capped.items():
        t.drop([i], reason)
    return kept, rank


def mix_step(t: Traces, kept: list[int], rank: dict[int, int], pairs: list[dict], sel, mix) -> tuple[list[dict], dict]:
    """Mix targets over the kept traces and the journey samples (ranked after their problem's own traces)."""
    rows = list(kept)  # a trace's row, or for a journey its right trace's row
    ranks = [rank[i] for i in kept]
    tokens = t.values("tokens", kept)
    next_rank: dict[str, int] = defaultdict(int)
    for i in kept:
        next_rank[t.col["problem_id"][i]] = max(next_rank[t.col["problem_id"][i]], rank[i] + 1)
    for p in pairs:
        w, r = t.row_of[p["wrong_key"]], t.row_of[p["right_key"]]
        rows.append(r)
        ranks.append(next_rank[p["problem_id"]])
        next_rank[p["problem_id"]] += 1
        tokens.append(t.col["tokens"][w] + t.col["tokens"][r])
    order = fill_order(t.values("problem_id", rows), ranks, sel.seed)
    chosen, report = apply_mix(order, t.values("mode", rows), t.values("domain", rows), tokens, mix)
    chosen = set(chosen)
    t.drop([i for j, i in enumerate(kept) if j not in chosen], "mix")
    return [p for j, p in enumerate(pairs, start=len(kept)) if j in chosen], report


def write_step(t: Traces, ds, run: RunDir, pass_rate: dict[str, float], labels: dict[int, str], pairs: list[dict]) -> None:
    """The kept traces (and journeys) with their new columns, streamed through Ray into curate/."""
    import ray

    decisions = ray.put({t.col["trace_key"][i]: (pass_rate[t.col["problem_id"][i]], labels.get(i)) for i in t.alive()})
    out = ds.map_batches(curated_batch, fn_kwargs={"decisions": decisions}, batch_format="pyarrow", num_cpus=0.5)
    if pairs:
        roles = defaultdict(list)
        for p in pairs:
            p["pass_rate"] = pass_rate[p["problem_id"]]
            roles[p["wrong_key"]].append((p["journey_key"], "wrong"))
            roles[p["right_key"]].append((p["journey_key"], "right"))
        tagged = ds.map_batches(journey_roles, fn_kwargs={"roles": ray.put(dict(roles))}, batch_format="pyarrow", num_cpus=0.5)
        out = out.union(tagged.groupby("_journey").map_groups(
            journey_group, fn_kwargs={"pairs": ray.put({p["journey_key"]: p for p in pairs})}, batch_format="pyarrow", num_cpus=0.5
        ))
    out.write_parquet(run.path(STAGE), filesystem=run.fs, compression="zstd")
    if not run.parts(STAGE):
        run.write_part(STAGE, CURATED_SCHEMA.empty_table(), "part-00000.parquet")


def run_curate(cfg: PipelineConfig, run: RunDir, paths: list[str], fs, progress) -> dict:
    """Curate the verified traces in `paths` into run_dir/curate; returns the stage's stats entry."""
    import ray

    settings = cfg.curate
    d, sel, deco = settings.dedup, settings.select, settings.decontaminate
    run.reset_stage(STAGE)
    ds = ray.data.read_parquet(paths, filesystem=fs)
    index = build_index(deco.benchmarks, deco.ngram, deco.exact, deco.fuzzy_share) if deco.benchmarks else None
    index_ref = ray.put(index) if index is not None else None
    hit_fields = [f for f in deco.fields if f != "problem"] if index is not None else []

    meta = _collect(ds.map_batches(
        meta_batch,
        fn_kwargs={"settings": cfg.verify, "vote": settings.majority_vote.enabled,
                   "diversity_ngram": d.ngram if sel.rule == "diverse" else None, "hit_fields": hit_fields, "index": index_ref},
        batch_format="pyarrow", batch_size=256, num_cpus=0.5,
    ))
    t = Traces(meta.to_pydict())
    entry: dict = {"verify_rows": meta.num_rows, "in": len(t.live)}
    dedup_on = d.exact or d.near

    # 1. Problems stated twice (across sources); 2. benchmark contamination. Both drop whole problems.
    problems = distinct_problems(paths, fs, {t.col["problem_id"][i] for i in t.live})
    gone: dict[str, str] = {}  # problem_id -> why all its traces leave
    if dedup_on and d.problems and problems.num_rows > 1:
        found = duplicate_problems_per_mode(t, problems, d)
        entry["dedup"] = {"problems": {"exact": sum(r == "exact_dup_problem" for r in found.values()),
                                       "near": sum(r == "near_dup_problem" for r in found.values())}}
        for i in sorted(t.live):
            if (reason := found.get((t.col["problem_id"][i], t.col["mode"][i]))) is not None:
                t.drop([i], reason)
        # A problem left with no trace in any mode is gone: decontamination need not look at it.
        gone.update({pid: reason for (pid, _), reason in found.items()
                     if all(i in t.removed or i not in t.live for i in t.rows_of[pid])})
    if index is not None:
        entry["decontamination"] = decontaminate_step(t, problems, gone, deco, index, index_ref, hit_fields, run)
    else:
        run.write_text(CONTAMINATION_FILE, "")
    for pid, reason in gone.items():
        t.drop(t.rows_of[pid], reason)

    # 3. Majority vote where there is no reference; then the difficulty column.
    labels, vote_entry = vote_step(t, settings.majority_vote)
    if vote_entry:
        entry["majority_vote"] = vote_entry
    agreeing = Counter(t.col["problem_id"][i] for i in labels)
    pass_rate = {pid: (sum(t.col["status"][i] == "accepted" for i in rows) + agreeing[pid]) / len(rows)
                 for pid, rows in t.rows_of.items()}

    # 4. Duplicate responses (within a problem: two problems may share a short answer).
    if dedup_on and d.responses and (found := response_dedup_step(t, ds, d)):
        entry.setdefault("dedup", {})["responses"] = found

    # 5. Difficulty band, k per problem, caps; 6. journeys; 7. mix targets.
    kept, rank = select_step(t, sel, pass_rate)
    pairs = []
    if settings.journey.enabled:
        wrong = [{"trace_key": t.col["trace_key"][i], "problem_id": t.col["problem_id"][i]}
                 for i, s in enumerate(t.col["status"]) if s == "wrong" and t.col["problem_id"][i] not in gone]
        right = [{"trace_key": t.col["trace_key"][i], "problem_id": t.col["problem_id"][i], "rank": rank[i]}
                 for i in kept if t.col["mode"][i] == "reasoning" and i not in labels]
        pairs = pick_pairs(wrong, right, settings.journey.per_problem, settings.journey.markers, sel.seed)
    pairs, entry["mix"] = mix_step(t, kept, rank, pairs, sel, settings.mix)
    for target in entry["mix"]["short"]:
        progress(f"curate: mix target {target['mode']}/{target['domain']} fell short: {target['available']} of "
                 f"{target['target']} {target['unit']}")

    write_step(t, ds, run, pass_rate, labels, pairs)
    write_rejects(run, t.col, t.removed)
    final = t.alive()
    entry.update({
        "out": len(final) + len(pairs),
        "rejected": dict(Counter(t.removed.values()).most_common()),
        "selection": {"rule": sel.rule, "per_problem": sel.per_problem,
                      "problems": len(set(t.values("problem_id", final)))},
        "journey": {"samples": len(pairs)},
    })
    return entry


def write_rejects(run: RunDir, col: dict, removed: dict[int, str]) -> None:
    lines = (json.dumps({"trace_key": col["trace_key"][i], "problem_id": col["problem_id"][i],
                         "sample_idx": col["sample_idx"][i], "reason": reason}) + "\n"
             for i, reason in sorted(removed.items()))
    run.write_text(f"rejects/{STAGE}.jsonl", "".join(lines))


def files_signature(paths: list[str], fs=None) -> list:
    """(path, size, mtime) of input files: a changed file changes the stage's fingerprint."""
    import fsspec

    fs = fs or fsspec.filesystem("file")
    out = []
    for p in paths:
        info = fs.info(p)
        out.append((p, info.get("size"), str(info.get("mtime") or info.get("LastModified") or "")))
    return out


def benchmarks_signature(cfg: PipelineConfig) -> list:
    sig = []
    for bench in cfg.curate.decontaminate.benchmarks:
        sig.append(bench.hf if bench.hf is not None else files_signature(benchmark_files(bench.path)))
    return sig
