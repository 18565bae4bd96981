"""Curation at scale: `factory curate` then `factory shard` on synthetic R1 runs of growing size.

For each size, a run directory holds a `verify/` stage as verify writes it (VERIFIED_SCHEMA part files)
of R1-style traces of ~20 KB (bench/trace_corpus.py: real model text). It is shaped like an R1 run:
problems x 4 samples over several sources and domains; problems stated twice across sources (exactly,
and reworded), problems that are reworded benchmark items (aime24, amc23, minerva_math, olympiadbench,
gaokao2023en from ../shared/data), problems without a reference (majority vote: a clear majority, an
equivalent spelling in the majority, or a tie), planted exact and near copies among a problem's samples,
wrong answers and other rejects. Every trace is a pure function of (seed, i); the corpus is written part
by part by worker processes (never held whole) and reused from --work-dir when already there.

Then the real CLI runs each step as a subprocess, as a user would, with its own local Ray instance:
    python -m factory.cli curate -p pipeline.yaml --run-dir RUN
    python -m factory.cli shard  -p pipeline.yaml --run-dir RUN
with curate settings like pipelines/r1_distill.yaml's (benchmarks from local files; caps and mix targets
scaled to the corpus so each step has something to remove).

Measured per step, sampled every 0.5 s: wall time; the peak memory of the step's process tree (the CLI,
and Ray's GCS, raylet and workers it started): summed RSS, and summed PSS, which counts a page shared by
several processes (Ray's object store in /dev/shm) once; and the peak of the machine's used memory
(total - available, which includes /dev/shm) above what it was before the step. The machine is shared:
the system figure includes the neighbours' changes, the tree figures do not. Shard sorts out of core
(one problem_id range at a time), so its memory should stay near-flat as the corpus grows.

Planted near copies have 1-10% of their words edited; only those whose word 5-gram Jaccard stays at or
above the 0.8 threshold (about half) are near duplicates by definition, so curate removes about half.

Run: python bench/bench_curate_scale.py --sizes 2000,6000                  (a few minutes)
     python bench/bench_curate_scale.py --sizes 20000,60000
     python bench/bench_curate_scale.py                                     (60K, 200K, 600K: the issue's figure)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psutil  # noqa: E402
from trace_corpus import DATA, TraceCorpus  # noqa: E402

GENERATOR = "curate-scale-v2"  # bump when the corpus below changes: a built corpus is reused only if equal
SAMPLES = 4  # teacher.sampling.n of pipelines/r1_distill.yaml
PART_TRACES = 2000  # traces per verify part file (~80 MB of text before compression)
ROW_GROUP = 250
TEACHER = "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
SAMPLING = {"n": SAMPLES, "temperature": 0.6, "top_p": 0.95, "max_tokens": 32768}
PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
# (source, domain, share of problems)
SOURCES = (("numina_math", "math", 0.50), ("gsm8k", "math", 0.20), ("orca_math", "math", 0.20), ("camel_physics", "physics", 0.10))
BENCHMARKS = ("aime24", "amc23", "minerva_math", "olympiadbench", "gaokao2023en")
# Problem kinds (shares of problems) and trace kinds (shares of traces).
DUP_EXACT, DUP_REWORDED, CONTAMINATED, NO_REFERENCE = 0.015, 0.015, 0.005, 0.06
EXACT_COPY, NEAR_COPY, WRONG, OTHER_REJECT = 0.01, 0.04, 0.08, 0.03
INSTRUCTIONS = ("Solve the following problem.", "Answer this question:", "Here is a problem for you.")
VOTE_PATTERNS = (("majority", 0.7), ("spelled", 0.1), ("tie", 0.2))
TEXT_COLUMNS = ("problem", "prompt", "completion", "reasoning", "response")
_NUMBER = re.compile(r"\d+")
_SENTENCE = re.compile(r"(?<=[.?!])\s+")


def _rng(*key) -> random.Random:
    return random.Random(":".join(map(str, key)))


class SyntheticRun:
    """Problem j and trace i of the synthetic R1 run, as pure functions of (seed, j) and (seed, i)."""

    def __init__(self, seed: int = 0):
        from factory.config import VerifyConfig

        self.seed = seed
        self.corpus = TraceCorpus(seed=seed)
        self.questions = [json.loads(line)["question"] for line in (DATA / "gsm8k" / "test.jsonl").open()]
        self.questions += [json.loads(line)["question"] for line in (DATA / "qwen25_math_eval" / "math_cot_100.jsonl").open()]
        self.bench_items = []
        for name in BENCHMARKS:
            for line in (DATA / "qwen25_math_eval" / name / "test.jsonl").open():
                row = json.loads(line)
                self.bench_items.append(row.get("problem") or row.get("question"))
        self.verify_settings = VerifyConfig()
        self._last: tuple[int, dict] | None = None
        self.last_made = ""  # how the last trace's text was made: fresh, exact_copy or near_copy

    # --- problems ---

    def _kind(self, j: int) -> str:
        x = _rng(self.seed, "kind", j).random()
        for kind, share in (("dup_exact", DUP_EXACT), ("dup_reworded", DUP_REWORDED), ("contaminated", CONTAMINATED),
                            ("no_reference", NO_REFERENCE)):
            if x < share:
                return kind if j > 0 or kind in ("contaminated", "no_reference") else "plain"
            x -= share
        return "plain"

    def _source(self, j: int) -> tuple[str, str]:
        x = _rng(self.seed, "source", j).random()
        for source, domain, share in SOURCES:
            if x < share:
                return source, domain
            x -= share
        return SOURCES[-1][:2]

    def _text(self, j: int) -> str:
        """A fresh problem: one real question and a sentence of each of two others, numbers redrawn (so two
        problems from the same question stay below the near-duplicate threshold)."""
        rng = _rng(self.seed, "text", j)
        extras = [rng.choice(_SENTENCE.split(rng.choice(self.questions).strip())) for _ in range(2)]
        text = " ".join([extras[0], rng.choice(self.questions), extras[1]])
        return _NUMBER.sub(lambda m: str(rng.randrange(2, 1000)), text)

    def problem(self, j: int) -> dict:
        from factory.records import problem_id

        rng = _rng(self.seed, "problem", j)
        kind, (source, domain) = self._kind(j), self._source(j)
        text = self._text(j)
        if kind in ("dup_exact", "dup_reworded"):  # an earlier plain problem, under another source
            original = next((k for k in (rng.randrange(j) for _ in range(20)) if self._kind(k) == "plain"), None)
            if original is None:
                kind = "plain"
            else:
                source = next(s for s, _, _ in SOURCES if s != self._source(original)[0])
                domain = self._source(original)[1]
                text = self._text(original)
                text = text.upper() if kind == "dup_exact" else f"{rng.choice(INSTRUCTIONS)} {text}"
        elif kind == "contaminated":
            text = f"{rng.choice(INSTRUCTIONS)} {self.bench_items[rng.randrange(len(self.bench_items))].replace('$', '')}"
        answer = str(rng.randrange(1, 1000)) if domain == "math" and kind != "no_reference" else None
        vote = None
        if kind == "no_reference" and domain == "math":
            q = rng.choice((2, 4, 5, 8))
            p = rng.choice([k for k in range(1, 4 * q) if k % 2 or q % 2])
            a, a_alt, b = f"\\frac{{{p}}}{{{q}}}", str(p / q), f"\\frac{{{p + 1}}}{{{q}}}"
            pattern = rng.choices([v for v, _ in VOTE_PATTERNS], [w for _, w in VOTE_PATTERNS])[0]
            vote = {"majority": [a, a, a, b], "spelled": [a, a_alt, a, b], "tie": [a, b, a, b]}[pattern]
        # One id per problem, as a source's own ids would be: ingest keeps rows unique by id, so verify/
        # never holds one trace key twice, while the same text under two ids is for problem dedup to find.
        return {"problem_id": problem_id(source, f"{j}\n{text}"), "source": source, "domain": domain, "problem": text,
                "answer": answer, "kind": kind, "vote": vote, "wrong": str(rng.randrange(1000, 2000))}

    def _problem_cached(self, j: int) -> dict:
        if self._last is None or self._last[0] != j:
            self._last = (j, self.problem(j))
        return self._last[1]

    # --- traces ---

    def _body(self, i: int) -> tuple[str, str]:
        """The think block and closing text of trace i, and how it was made (fresh, exact or near copy)."""
        s = i % SAMPLES
        x = _rng(self.seed, "copy", i).random()
        if s > 0 and x < EXACT_COPY:
            return self.corpus.document(i - s), "exact_copy"
        if s > 0 and x < EXACT_COPY + NEAR_COPY:
            rng = _rng(self.seed, "near", i)
            return self.corpus.near_copy(self.corpus.document(i - s), rng.uniform(0.01, 0.1), rng), "near_copy"
        return self.corpus.document(i), "fresh"

    def trace(self, i: int) -> dict:
        from factory.records import trace_key
        from factory.stages.verify import decide
        from verifiers import split_think

        j, s = divmod(i, SAMPLES)
        p = self._problem_cached(j)
        body, made = self._body(i)
        self.last_made = made
        x = _rng(self.seed, "status", i if made != "exact_copy" else i - s).random()
        status = "wrong" if x < WRONG else "other_reject" if x < WRONG + OTHER_REJECT else "right"
        if p["vote"]:
            final = p["vote"][s if made != "exact_copy" else 0]
        else:
            final = p["wrong"] if status == "wrong" and p["answer"] else (p["answer"] or str(len(body) % 97))
        completion = f"{body}\n\nThe final answer is $\\boxed{{{final}}}$."
        reasoning, response = split_think(completion)
        ok = {"passed": True, "reason": "ok", "score": None, "extracted": None}
        math = None
        if p["domain"] == "math":
            if p["answer"] is None:
                math = {"passed": None, "reason": "no_reference", "score": None, "extracted": None}
            elif status == "wrong":
                math = {"passed": False, "reason": "wrong_answer", "score": 0.0, "extracted": final}
            else:
                math = {"passed": True, "reason": "ok", "score": 1.0, "extracted": final}
        truncated = status == "other_reject"
        prompt = PROMPT.format(problem=p["problem"])
        row = {
            **{k: p[k] for k in ("problem_id", "source", "domain", "problem", "answer")},
            "tests": None, "language": "en", "sample_idx": s,
            "trace_key": trace_key(p["problem_id"], s, TEACHER, None, SAMPLING),
            "teacher": TEACHER, "sampling": json.dumps(SAMPLING, sort_keys=True), "mode": "reasoning",
            "prompt": prompt, "completion": completion, "reasoning": reasoning, "response": response,
            "finish_reason": "length" if truncated else "stop",
            "prompt_tokens": len(prompt) // 4, "completion_tokens": len(completion) // 4, "error": None,
            "verdict_format": ok, "verdict_math": math, "verdict_code": None, "verdict_language": ok,
            "verdict_repetition": ok,
            "verdict_truncation": {"passed": False, "reason": "truncated", "score": None, "extracted": None} if truncated else ok,
        }
        row["accepted"], row["reject_reason"] = decide(row, self.verify_settings)
        return row


# --- building the verify stage ------------------------------------------------------------------------


def _build_part(job: tuple[str, int, int, int, int]) -> None:
    """Write part k (traces lo..hi-1) in row groups, with a sidecar of its counts (read for the manifest)."""
    import pyarrow.parquet as pq

    from factory.records import VERIFIED_SCHEMA, table

    verify_dir, seed, k, lo, hi = job
    gen = SyntheticRun(seed)
    target = Path(verify_dir) / f"part-{k:05d}.parquet"
    counts: dict[str, int] = {}

    def count(key: str, n: int = 1) -> None:
        counts[key] = counts.get(key, 0) + n

    tmp = target.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, VERIFIED_SCHEMA, compression="zstd") as writer:
        for start in range(lo, hi, ROW_GROUP):
            rows = []
            for i in range(start, min(start + ROW_GROUP, hi)):
                r = gen.trace(i)
                rows.append(r)
                count("traces")
                count("text_bytes", sum(len((r[c] or "").encode()) for c in TEXT_COLUMNS))
                count("accepted", r["accepted"])
                count(f"traces:{gen.last_made}")
                if r["sample_idx"] == 0:
                    count(f"problems:{gen._problem_cached(i // SAMPLES)['kind']}")
            writer.write_table(table(rows, VERIFIED_SCHEMA), row_group_size=ROW_GROUP)
    tmp.rename(target)
    target.with_name(f"_{target.stem}.json").write_text(json.dumps(counts))


def build_run(run_dir: Path, traces: int, seed: int, workers: int) -> dict:
    """run_dir/verify holding `traces` traces, reusing (or finishing) what is there; returns its manifest."""
    verify = run_dir / "verify"
    marker = json.dumps({"generator": GENERATOR, "seed": seed, "traces": traces, "samples": SAMPLES})
    done, building = verify / "_SUCCESS", verify / "_BUILDING"
    if not (done.exists() and done.read_text() == marker):
        if run_dir.exists() and not (building.exists() and building.read_text() == marker):
            shutil.rmtree(run_dir)  # another generator, seed or size: start over
        verify.mkdir(parents=True, exist_ok=True)
        building.write_text(marker)
        jobs = [(str(verify), seed, k, lo, min(lo + PART_TRACES, traces))
                for k, lo in enumerate(range(0, traces, PART_TRACES))
                if not (verify / f"_part-{k:05d}.json").exists()]
        t0 = time.perf_counter()
        print(f"  building {traces} traces: {len(jobs)} part(s) to write, {workers} process(es)", flush=True)
        with Pool(workers) as pool:
            for n, _ in enumerate(pool.imap_unordered(_build_part, jobs), 1):
                if n % 10 == 0 or n == len(jobs):
                    print(f"    {n}/{len(jobs)} parts, {time.perf_counter() - t0:.0f} s", flush=True)
        building.unlink()
        done.write_text(marker)  # the verify stage's marker: curate's fingerprint and shard's check read it
    manifest: dict[str, int] = {}
    for side in sorted(verify.glob("_part-*.json")):
        for key, value in json.loads(side.read_text()).items():
            manifest[key] = manifest.get(key, 0) + value
    manifest["disk_bytes"] = sum(p.stat().st_size for p in verify.glob("part-*.parquet"))
    return manifest


# --- the pipeline file and the measured steps -----------------------------------------------------------


def pipeline(run_dir: Path, traces: int) -> dict:
    """pipelines/r1_distill.yaml's curate and shard settings; benchmarks from local files; caps and mix
    targets scaled to the corpus (r1's are sized for 800K samples) so that both have something to cut."""
    eval_dir = DATA / "qwen25_math_eval"
    return {
        "run_dir": str(run_dir),
        "stages": ["curate", "shard"],
        "teacher": {"model": TEACHER, "sampling": SAMPLING},
        "curate": {
            "dedup": {"problems": True, "responses": True, "exact": True, "near": True, "threshold": 0.8,
                      "num_perm": 128, "ngram": 5, "keep": "first"},
            "decontaminate": {"ngram": 13, "exact": True, "fuzzy_share": 0.5, "fields": ["problem"],
                              "benchmarks": [{"name": b, "path": str(eval_dir / b)} for b in BENCHMARKS]},
            "majority_vote": {"enabled": True, "min_share": 0.5, "min_votes": 3, "timeout_s": 5},
            "select": {"per_problem": 2, "rule": "shortest", "seed": 0, "min_pass_rate": 0.0, "max_pass_rate": 1.0,
                       "caps": {"source": {"gsm8k": int(0.08 * traces)}, "domain": {}}},
            "journey": {"enabled": False},
            "mix": {"unit": "rows", "targets": {"reasoning": {"math": int(0.33 * traces)}, "direct": int(0.1 * traces)}},
        },
        "shard": {"splits": {"train": 0.99, "test": 0.01}, "max_rows_per_shard": 50000, "license": "mit",
                  "pretty_name": "bench_curate_scale"},
    }


class Sampler(threading.Thread):
    """Peak memory of a process tree and of the machine, every `every` seconds while the step runs."""

    def __init__(self, pid: int, base_used: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.every, self.base_used = psutil.Process(pid), every, base_used
        self.peak = {"rss": 0, "pss": 0, "driver": 0, "used": 0, "procs": 0}
        self.at_peak: dict[str, int] = {}  # PSS by process role at the peak
        self.stop = threading.Event()

    def sample(self) -> None:
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        rss = pss = driver = 0
        parts: dict[str, int] = {}
        for p in procs:
            try:
                info = p.memory_full_info()
                role = "driver" if p is self.root else role_of(p.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            rss += info.rss
            pss += info.pss
            driver = info.pss if p is self.root else driver
            parts[role] = parts.get(role, 0) + info.pss
        peak = self.peak
        if pss > peak["pss"]:
            self.at_peak = parts
        peak["rss"], peak["pss"], peak["driver"] = max(peak["rss"], rss), max(peak["pss"], pss), max(peak["driver"], driver)
        peak["used"] = max(peak["used"], used_memory() - self.base_used)
        peak["procs"] = max(peak["procs"], len(procs))

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.sample()


def role_of(cmdline: list[str]) -> str:
    """raylet, gcs_server, a Ray worker (process title ray::...), or other (dashboard, log monitor ...)."""
    first = cmdline[0] if cmdline else ""
    if first.startswith("ray::"):
        return "workers"
    name = Path(first.split()[0]).name if first else ""
    return name if name in ("raylet", "gcs_server") else "other"


def used_memory() -> int:
    """The machine's used memory, /dev/shm (Ray's object store) included: psutil's `used` leaves it out."""
    vm = psutil.virtual_memory()
    return vm.total - vm.available


def step(cmd: str, pipeline_file: Path, run_dir: Path, log: Path) -> dict:
    """One CLI command as a subprocess, on its own local Ray instance; wall seconds and peak memory."""
    env = {**os.environ, "RAY_ADDRESS": "local", "FACTORY_PROGRESS_BARS": "0"}  # never another helper's Ray
    args = [sys.executable, "-m", "factory.cli", cmd, "-p", str(pipeline_file), "--run-dir", str(run_dir)]
    base_used = used_memory()
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid, base_used)
        sampler.start()
        rc = proc.wait()
        sampler.stop.set()
        sampler.join()
    wall = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"`factory {cmd}` failed (exit {rc}); its output: {log}\n" + log.read_text()[-3000:])
    return {"wall": wall, **sampler.peak, "at_peak": sampler.at_peak}


_PLAN = re.compile(r"Execution plan of Dataset (\S+): (.*)")
_FINISHED = re.compile(r"Dataset (\S+) execution finished in ([\d.]+) seconds")
_OPERATOR = re.compile(r"MapBatches\((\w+)\)|(Write)")


def ray_passes(log: Path) -> str:
    """Seconds per Ray Data pass of a step, named by its last map function, from Ray Data's log lines."""
    plans, seconds = {}, {}
    for line in log.read_text(errors="replace").splitlines():
        if m := _PLAN.search(line):
            names = [a or b for a, b in _OPERATOR.findall(m.group(2))]
            plans[m.group(1)] = names[-1] if names else "read"
        elif m := _FINISHED.search(line):
            seconds[m.group(1)] = float(m.group(2))
    total: dict[str, float] = {}
    for ds, secs in seconds.items():
        total[plans.get(ds, "?")] = total.get(plans.get(ds, "?"), 0) + secs
    return ", ".join(f"{name} {secs:.0f}" for name, secs in total.items())


def held_by_design(traces: int, num_perm: int = 128) -> dict[str, float]:
    """Bytes per trace curate's driver holds by design, measured on a synthetic metadata table.

    The per-trace table (`Traces`: Python lists of keys, ids, sources, statuses, tokens; lookups by key and
    problem) and the dedup index (a uint32 MinHash signature per live trace, the LSH band keys, the ids)."""
    import tracemalloc

    import pyarrow as pa

    from factory.curate.dedup import band_layout
    from factory.stages.curate import META_SCHEMA, Traces

    n = 20_000
    tracemalloc.start()
    col = {"trace_key": [f"{i:032x}" for i in range(n)], "problem_id": [f"{i // SAMPLES:024x}" for i in range(n)],
           "sample_idx": [i % SAMPLES for i in range(n)], "source": [SOURCES[i % 4][0] for i in range(n)],
           "domain": [SOURCES[i % 4][1] for i in range(n)], "mode": ["reasoning"] * n, "status": ["accepted"] * n,
           "tokens": [5000 + i for i in range(n)], "vote_answer": [None] * n, "signature": [None] * n, "hits": [None] * n}
    t = Traces(col)
    table_bytes = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    table_bytes += pa.Table.from_pydict(col, schema=META_SCHEMA).nbytes / n  # run_curate keeps the Arrow form too
    del t, col
    bands, _ = band_layout(0.8, num_perm, "exact")
    index_bytes = 4 * num_perm + 8 * bands + 16 + 90  # signature, band keys, exact digest, id (a str in an object array)
    return {"table": table_bytes, "index": index_bytes, "total": traces * (table_bytes + index_bytes)}


# --- the report ---------------------------------------------------------------------------------------


def gb(x: float) -> str:
    return f"{x / 1e9:.2f}"


def removed(stats: dict) -> str:
    c = stats["curate"]
    parts = [f"verify rows {c['verify_rows']}, taking part {c['in']}, kept {c['out']}"]
    parts.append("removed: " + ", ".join(f"{k} {v}" for k, v in c["rejected"].items()))
    if "dedup" in c:
        parts.append("dedup: " + json.dumps(c["dedup"]))
    if "decontamination" in c:
        hits = {b: v["hits"] for b, v in c["decontamination"]["benchmarks"].items()}
        parts.append(f"benchmark hits: {hits}")
    if "majority_vote" in c:
        parts.append("majority vote: " + json.dumps(c["majority_vote"]))
    if "shard" not in stats:
        return "\n      ".join(parts)
    s = stats["shard"]
    parts.append(f"shard: {s['out']} SFT rows in {s['shards']} file(s), {gb(s['download_bytes'])} GB on disk; "
                 f"splits {json.dumps({k: v['rows'] for k, v in s['splits'].items()})}")
    return "\n      ".join(parts)


def planted(m: dict) -> str:
    keys = ("problems:dup_exact", "problems:dup_reworded", "problems:contaminated", "problems:no_reference",
            "traces:exact_copy", "traces:near_copy")
    return ", ".join(f"{k.split(':')[1]} {m.get(k, 0)}" for k in keys) + f"; verify accepted {m.get('accepted', 0)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="60000,200000,600000", help="corpus sizes in traces")
    p.add_argument("--work-dir", type=Path, default=Path("/work/bench-data/curate_scale"),
                   help="where corpora (reused across runs) and the curate/shard outputs go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build-workers", type=int, default=2, help="processes writing the corpus")
    p.add_argument("--extrapolate-to", type=int, default=600_000)
    args = p.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    print(f"machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"load {os.getloadavg()[0]:.2f}; {SAMPLES} samples per problem")
    results = []
    for n in sizes:
        run_dir = args.work_dir / f"{n}"
        print(f"[{n} traces] {run_dir}", flush=True)
        manifest = build_run(run_dir, n, args.seed, args.build_workers)
        print(f"  planted: {planted(manifest)}", flush=True)
        for old in ("curate", "dataset", "rejects", "stats.json", "pipeline.yaml"):
            path = run_dir / old
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        pipeline_file = run_dir / "pipeline.yaml"
        pipeline_file.write_text(json.dumps(pipeline(run_dir, n), indent=2))  # JSON is YAML
        load = os.getloadavg()[0]  # the neighbours' load, before our step starts
        curate = step("curate", pipeline_file, run_dir, run_dir / "curate.log")
        print(f"  curate: {curate['wall']:.0f} s, up to {curate['procs']} processes; Ray Data passes (s): "
              f"{ray_passes(run_dir / 'curate.log')}", flush=True)
        print("  curate's peak PSS by process: " + ", ".join(f"{k} {gb(v)} GB" for k, v in sorted(curate["at_peak"].items())))
        shard = step("shard", pipeline_file, run_dir, run_dir / "shard.log")
        print(f"  shard:  {shard['wall']:.0f} s, up to {shard['procs']} processes", flush=True)
        stats = json.loads((run_dir / "stats.json").read_text())
        print(f"  {removed(stats)}", flush=True)
        results.append({"n": n, "m": manifest, "curate": curate, "shard": shard, "load": load})

    design = held_by_design(1)
    first = results[0]
    rate0 = (first["curate"]["wall"] + first["shard"]["wall"]) / first["n"]
    print(f"\ncurate + shard through the CLI (each a subprocess with its own local Ray); traces of "
          f"{results[-1]['m']['text_bytes'] / results[-1]['n'] / 1e3:.1f} KB of text (problem, prompt, completion, "
          "and verify's reasoning/response split)")
    print("memory: PSS/RSS = peak summed over the step's process tree (CLI, Ray GCS, raylet, workers); driver = the CLI "
          "process's own peak PSS; "
          "sys = peak machine used memory (incl. /dev/shm) above its level before the step (shared machine: noisy)")
    head = (f"{'traces':>8} {'disk GB':>7} {'text GB':>7} | {'curate s':>8} {'PSS GB':>6} {'driver':>6} {'RSS GB':>6} {'sys GB':>6} | "
            f"{'shard s':>7} {'PSS GB':>6} {'RSS GB':>6} {'sys GB':>6} | {'s/1K':>5} {'ratio':>5} {'load':>4}")
    print("(s/1K: curate + shard seconds per 1,000 traces; ratio: against the smallest size, 1.00 = linear; load: "
          "the machine's 1-min load average before curate started)")
    print(head)
    print("-" * len(head))
    for r in results:
        c, s = r["curate"], r["shard"]
        rate = (c["wall"] + s["wall"]) / r["n"]
        print(f"{r['n']:>8} {gb(r['m']['disk_bytes']):>7} {gb(r['m']['text_bytes']):>7} | {c['wall']:>8.0f} "
              f"{gb(c['pss']):>6} {gb(c['driver']):>6} {gb(c['rss']):>6} {gb(c['used']):>6} | {s['wall']:>7.0f} {gb(s['pss']):>6} "
              f"{gb(s['rss']):>6} {gb(s['used']):>6} | {1000 * rate:>5.1f} {rate / rate0:>5.2f} {r['load']:>4.1f}")
    print(f"\nmemory per trace against text per trace (held by design in curate's driver: the per-trace table "
          f"{design['table']:.0f} B + the dedup index {design['index']:.0f} B = {design['table'] + design['index']:.0f} B a trace)")
    for prev, r in zip([None] + results[:-1], results):
        text = r["m"]["text_bytes"] / r["n"]
        line = (f"  {r['n']:>8} traces: text {text / 1e3:.1f} KB/trace; curate peak PSS {r['curate']['pss'] / r['n'] / 1e3:.2f} KB/trace, "
                f"shard peak PSS {r['shard']['pss'] / r['n'] / 1e3:.2f} KB/trace")
        if prev is not None:
            dn = r["n"] - prev["n"]
            line += (f"; marginal (vs {prev['n']}): curate {(r['curate']['pss'] - prev['curate']['pss']) / dn / 1e3:.2f} KB, "
                     f"shard {(r['shard']['pss'] - prev['shard']['pss']) / dn / 1e3:.2f} KB per added trace")
        print(line)
    if len(results) >= 2 and results[-1]["n"] < args.extrapolate_to:
        a, b, target = results[-2], results[-1], args.extrapolate_to
        dn = b["n"] - a["n"]

        def linear(key: str, field: str) -> float:
            return b[key][field] + (b[key][field] - a[key][field]) / dn * (target - b["n"])

        disk = b["m"]["disk_bytes"] / b["n"] * target
        print(f"\nextrapolated linearly from {a['n']} and {b['n']} to {target} traces: curate {linear('curate', 'wall'):.0f} s "
              f"(peak PSS {gb(linear('curate', 'pss'))} GB), shard {linear('shard', 'wall'):.0f} s (peak PSS "
              f"{gb(linear('shard', 'pss'))} GB); verify/ {gb(disk)} GB on disk, plus curate/ and dataset/")


if __name__ == "__main__":
    main()
