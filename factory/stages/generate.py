"""Generate: problems x n samples -> raw teacher traces, through Ray Data LLM and the vLLM engine.

Resume: part files are appended as batches come back from the engine (written under a temporary
name, then moved), so a killed run loses at most the batches in flight; a re-run skips every
`trace_key` already on disk. A changed teacher, sampling or mode changes the keys, so old traces
stay and new ones are made.

Faults: a row the engine refuses (a prompt longer than the context, a template error) goes to
`rejects/generate/` with its error, never into `generate/`, so what verify reads holds each key once.
A re-run tries such a row again, up to `teacher.max_retries` more times (the attempts are the error
records). An engine actor killed outright is restarted by Ray and its batch retried (seen with
ray 2.60); where an engine's death fails the whole Ray Data job instead (Ray issue 59522), the rows
not yet written run again with a fresh processor, up to `teacher.max_engine_restarts` times.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Callable, Iterator

import pyarrow as pa

from factory import stats
from factory.config import PipelineConfig, TeacherConfig
from factory.errors import FactoryError
from factory.records import TRACE_SCHEMA, table, trace_key
from factory.storage import RunDir

STAGE = "generate"
ERRORS = "rejects/generate"
# Prompt rendering and row assembly are light; a fraction of a CPU leaves the cores to the engine.
MAP_CPUS = 0.25
# How often the running accounting is saved to stats.json, so a killed run's engine time is kept.
CHECKPOINT_S = 15.0


def _teachers(cfg: PipelineConfig) -> dict[str, TeacherConfig]:
    from factory.teacher.prompts import source_teachers

    return source_teachers(cfg)


def plan_samples(
    problems: list[dict], cfg: PipelineConfig, skip: set[str], first_idx: int = 0
) -> list[dict]:
    """One row per (problem, sample_idx in [first_idx, first_idx + n)) whose key is not in `skip`.

    Rejection-sampling rounds ask for later sample indices, so their samples get keys of their own.
    """
    teachers = _teachers(cfg)
    sampling = cfg.teacher.sampling.model_dump()
    sampling_json = json.dumps(sampling, sort_keys=True)
    rows = []
    for p in problems:
        teacher = teachers.get(p.get("source"), cfg.teacher)
        for idx in range(first_idx, first_idx + cfg.teacher.sampling.n):
            key = trace_key(p["problem_id"], idx, teacher.model, teacher.revision, sampling, teacher.mode)
            if key not in skip:
                rows.append({**p, "sample_idx": idx, "trace_key": key, "teacher": teacher.model,
                             "sampling": sampling_json, "mode": teacher.mode})
    return rows


def sampling_params(teacher: TeacherConfig) -> dict:
    return {
        "n": 1,  # one row per sample, so every sample has its own key and resumes alone
        "temperature": teacher.sampling.temperature,
        "top_p": teacher.sampling.top_p,
        "max_tokens": teacher.sampling.max_tokens,
    }


def _preprocess(cfg: PipelineConfig):
    """Row -> row with the rendered prompt, its token ids and sampling params (the engine stage's input).

    A row whose prompt cannot be rendered (a template error) is marked with Ray Data LLM's
    `__inference_error__`: the engine stage then passes it through instead of failing the job.
    Every other row carries the column empty, which is what the engine stage expects.
    """
    from factory.teacher.prompts import prompt_token_ids, render_prompt

    from vllm.sampling_params import RequestOutputKind

    teachers = _teachers(cfg)
    # The final output only, as `vllm.LLM.generate` asks for: Ray Data LLM otherwise streams every
    # step of every request through the actor's event loop.
    params = {**sampling_params(cfg.teacher), "output_kind": RequestOutputKind.FINAL_ONLY}

    def preprocess(row: dict) -> dict:
        teacher = teachers.get(row.get("source"), cfg.teacher)
        try:
            prompt = render_prompt(teacher, row["problem"])
            tokens = prompt_token_ids(teacher, prompt)
        except Exception as e:  # template errors come in many types (jinja2, TypeError, ...)
            return {**row, "prompt": "", "tokenized_prompt": [], "sampling_params": params,
                    "__inference_error__": f"prompt: {type(e).__name__}: {e}"}
        return {**row, "prompt": prompt, "tokenized_prompt": tokens, "sampling_params": params,
                "__inference_error__": ""}

    return preprocess


def _postprocess(cfg: PipelineConfig):
    """Engine output row -> trace row. Also takes the error rows Ray Data LLM passes around postprocess."""
    from factory.teacher.prompts import reasoning_prefix
    from verifiers import split_think

    teachers = _teachers(cfg)
    max_tokens = cfg.teacher.sampling.max_tokens

    def postprocess(row: dict) -> dict:
        error = row.get("__inference_error__") or None
        prefix = reasoning_prefix(teachers.get(row.get("source"), cfg.teacher))
        n_out = int(row.get("num_generated_tokens") or 0)
        completion = None if error else prefix + (row.get("generated_text") or "")
        reasoning, response = split_think(completion) if completion is not None else (None, None)
        out = {f.name: row.get(f.name) for f in TRACE_SCHEMA}
        out.update(
            completion=completion,
            reasoning=reasoning,
            response=response,
            # Ray Data LLM does not pass vLLM's finish reason on; a sample that used its whole
            # budget was cut by max_tokens (stop strings are not used here).
            finish_reason="error" if error else ("length" if n_out >= max_tokens else "stop"),
            prompt_tokens=int(row.get("num_input_tokens") or len(row.get("tokenized_prompt") or [])),
            completion_tokens=n_out,
            error=str(error)[:2000] if error else None,
        )
        return out

    return postprocess


def build_llm_processor(cfg: PipelineConfig, on_cpu: bool):
    """A Ray Data LLM processor: problem rows in, trace rows out (error rows: see `trace_rows`)."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from factory.runtime import on_pool
    from factory.teacher.engine import engine_env, engine_kwargs, processor_kwargs

    teacher = cfg.teacher
    config = vLLMEngineProcessorConfig(
        model_source=teacher.model,
        engine_kwargs=engine_kwargs(teacher, on_cpu),
        runtime_env={"env_vars": engine_env(on_cpu)},
        # Prompts are rendered and tokenized in our preprocess, and the engine detokenizes its own
        # output: the separate Ray stages would each hold a CPU-reserving actor, which on a small node
        # starves the map tasks and deadlocks (seen on 2 cores), and add a hop per batch.
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        should_continue_on_error=True,  # a refused prompt becomes a row with its error, not a dead job
        # issue 7: cluster.pool_resources puts the engines on the GPU pool's nodes (factory/runtime.py)
        **on_pool(processor_kwargs(teacher, on_cpu), cfg.cluster),
    )
    light = {"num_cpus": MAP_CPUS}
    return build_processor(
        config,
        preprocess=_preprocess(cfg),
        postprocess=_postprocess(cfg),
        preprocess_map_kwargs=light,
        postprocess_map_kwargs=light,
    )


def trace_rows(rows: list[dict], postprocess) -> list[dict]:
    """Ray Data LLM hands error rows back as they were, around postprocess; finish them here."""
    return [postprocess(r) if r.get("__inference_error__") else r for r in rows]


def engine_batches(cfg: PipelineConfig, rows: list[dict], on_cpu: bool) -> Iterator[list[dict]]:
    """Trace rows for `rows`, one list per finished batch, from a fresh processor (fresh engines)."""
    import ray

    teacher = cfg.teacher
    # The sampling params carry vLLM's RequestOutputKind (see _preprocess), which Arrow cannot hold:
    # Ray Data keeps that column as pickled objects; saying so explicitly silences its warning.
    ray.data.DataContext.get_current().enable_fallback_to_arrow_object_ext_type = True
    blocks = max(1, min(len(rows) // teacher.batch_size, 200))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    post = _postprocess(cfg)
    out = build_llm_processor(cfg, on_cpu)(ds)
    for batch in out.iter_batches(batch_size=teacher.batch_size, batch_format="pyarrow"):
        yield trace_rows(batch.to_pylist(), post)


class Meter:
    """Rows done of total, output tokens/s and time left, for the progress callback."""

    def __init__(self, total: int, done: int, progress: Callable[[str], None]):
        self.total, self.done, self.progress = total, done, progress
        self.first: float | None = None  # first batch back: engine load is over
        self.rows = self.tokens = 0

    def add(self, rows: int, tokens: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:  # the rate counts batches after the first, so engine load does not skew the estimate
            self.rows += rows
            self.tokens += tokens
        self.done += rows
        span = now - self.first
        rate = self.tokens / span if span > 0 else 0.0
        left = (self.total - self.done) * span / self.rows if self.rows else None
        eta = f", about {_duration(left)} left" if left is not None else ""
        pct = 100 * self.done / max(self.total, 1)
        self.progress(f"generate: {self.done}/{self.total} traces ({pct:.0f}%), {rate:,.0f} output tokens/s{eta}")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _on_disk(run: RunDir) -> tuple[set[str], Counter]:
    """Keys of finished traces, and failed attempts per key (one error record each)."""
    key_schema = pa.schema([("trace_key", pa.string())])
    done = set(run.read_stage(STAGE, columns=["trace_key"], schema=key_schema).column("trace_key").to_pylist())
    failed = Counter(run.read_stage(ERRORS, columns=["trace_key"], schema=key_schema).column("trace_key").to_pylist())
    return done, failed


def _gpus(cfg: PipelineConfig, on_cpu: bool) -> int:
    """GPUs held while engines run: replicas x tp x pp (the most the pool may hold); none on CPU or an API."""
    if on_cpu or getattr(cfg.teacher, "backend", "vllm") != "vllm":
        return 0
    return cfg.teacher.concurrency * cfg.teacher.gpus_per_engine


class Ledger:
    """Tokens per source of the traces on disk, and what they cost.

    The stats entry it makes (stats.json, under `generate`) holds:
      sources: {source: {traces, prompt_tokens, completion_tokens}} of every trace on disk
      prompt_tokens, completion_tokens: the totals
      engine_seconds: time engines were up (load included), summed over every run that wrote traces here
      wall_seconds: the same for the stage's wall time (`seconds` is this run's alone)
      gpus: GPUs per engine x replicas (0 on CPU or with an API backend)
      gpu_hours: gpus x engine_seconds / 3600
      cost: {gpu: gpu_hours x teacher.price_per_gpu_hour,
             tokens: prompt and completion tokens x teacher.price_per_million_{input,output}_tokens / 1e6,
             total} -- each null when its price is not set
      per_accepted: {accepted, gpu_hours, cost, completion_tokens}, added after verify (see `per_accepted`)
    """

    def __init__(self, traces: pa.Table):
        self.sources: dict[str, dict] = {}
        cols = ("source", "prompt_tokens", "completion_tokens")
        self.add([dict(zip(cols, vals)) for vals in zip(*(traces.column(c).to_pylist() for c in cols))])

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            s = self.sources.setdefault(r["source"] or "", {"traces": 0, "prompt_tokens": 0, "completion_tokens": 0})
            s["traces"] += 1
            s["prompt_tokens"] += r["prompt_tokens"] or 0
            s["completion_tokens"] += r["completion_tokens"] or 0

    def entry(self, teacher: TeacherConfig, engine_seconds: float, gpus: int) -> dict:
        prompt = sum(s["prompt_tokens"] for s in self.sources.values())
        completion = sum(s["completion_tokens"] for s in self.sources.values())
        gpu_hours = gpus * engine_seconds / 3600
        gpu_cost = gpu_hours * teacher.price_per_gpu_hour if teacher.price_per_gpu_hour is not None else None
        p_in, p_out = teacher.price_per_million_input_tokens, teacher.price_per_million_output_tokens
        token_cost = None
        if p_in is not None or p_out is not None:
            token_cost = (prompt * (p_in or 0) + completion * (p_out or 0)) / 1e6
        costs = [c for c in (gpu_cost, token_cost) if c is not None]
        return {
            "sources": self.sources,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "engine_seconds": round(engine_seconds, 2),
            "gpus": gpus,
            "gpu_hours": round(gpu_hours, 6),
            "cost": {"gpu": gpu_cost, "tokens": token_cost, "total": sum(costs) if costs else None},
        }


def per_accepted(entry: dict, accepted: int) -> dict:
    """GPU-hours, cost and output tokens per accepted trace (null when none was accepted)."""
    if not accepted:
        return {"accepted": accepted, "gpu_hours": None, "cost": None, "completion_tokens": None}
    cost = (entry.get("cost") or {}).get("total")
    return {
        "accepted": accepted,
        "gpu_hours": entry.get("gpu_hours", 0) / accepted,
        "cost": cost / accepted if cost is not None else None,
        "completion_tokens": entry.get("completion_tokens", 0) / accepted,
    }


Batches = Callable[[list[dict]], Iterator[list[dict]]]


def run_generate(
    cfg: PipelineConfig,
    run: RunDir,
    problems: list[dict],
    progress: Callable[[str], None] = print,
    first_idx: int = 0,
    batches: Batches | None = None,
) -> dict:
    """Write the missing traces of `problems` (sample indices first_idx .. first_idx+n-1); return the stats entry.

    `batches` stands in for the vLLM engine: planned rows -> batches of trace rows (another backend,
    or real traces replayed). The entry is also saved to stats.json while the run goes, so the
    engine time of a killed run still counts when it resumes.
    """
    from factory.runtime import cluster_has_gpu

    teacher = cfg.teacher
    started = time.perf_counter()
    for stage in (STAGE, ERRORS):
        run.remove_partial(stage)  # a part a kill cut short stays under its temporary name
    done, failed = _on_disk(run)
    given_up = {k for k, c in failed.items() if c > teacher.max_retries and k not in done}
    not_done = plan_samples(problems, cfg, done, first_idx)
    pending = [r for r in not_done if r["trace_key"] not in given_up]
    total = len(problems) * teacher.sampling.n
    retried = sum(1 for r in pending if failed[r["trace_key"]])
    progress(f"generate: {total - len(not_done)}/{total} traces already on disk, {len(pending)} to write"
             + (f" ({retried} retried after an error)" if retried else "")
             + (f", {len(not_done) - len(pending)} given up after {teacher.max_retries + 1} errors each"
                if len(not_done) > len(pending) else ""))

    previous = run.read_json(stats.STATS_FILE, default={}).get(STAGE, {})
    if batches is None and teacher.backend == "openai":  # an OpenAI-compatible server: teacher/openai_backend.py
        from factory.teacher.openai_backend import generate_batches

        batches = lambda rows: generate_batches(cfg, rows)  # noqa: E731
    on_cpu = batches is None and not cluster_has_gpu()
    gpus = _gpus(cfg, on_cpu)
    ledger = Ledger(run.read_stage(STAGE, columns=["source", "prompt_tokens", "completion_tokens"], schema=TRACE_SCHEMA))
    meter = Meter(total, total - len(pending), progress)
    written: set[str] = set()
    counts: Counter = Counter()
    counts_by_reason: Counter = Counter()
    engine_s = 0.0

    def entry(engine_now: float) -> dict:
        return {
            "new_traces": counts["new"],
            "resumed_traces": total - len(pending),
            "errors": counts["errors"],
            "retried": retried,
            "given_up": len(given_up),
            "engine_restarts": counts["restarts"],
            "rejected": dict(counts_by_reason),
            "wall_seconds": round(previous.get("wall_seconds", 0) + time.perf_counter() - started, 2),
            **ledger.entry(teacher, previous.get("engine_seconds", 0) + engine_now, gpus),
        }

    def write(rows: list[dict]) -> None:
        # A task Ray retried after an engine died may hand back rows already written.
        rows = [r for r in rows if r["trace_key"] not in written]
        ok = [r for r in rows if not r.get("error")]
        bad = [r for r in rows if r.get("error")]
        if ok:
            run.write_part(STAGE, table(ok, TRACE_SCHEMA))
        if bad:
            run.write_part(ERRORS, table(bad, TRACE_SCHEMA))
            for r in bad:
                failed[r["trace_key"]] += 1
                if failed[r["trace_key"]] > teacher.max_retries:
                    given_up.add(r["trace_key"])
                counts_by_reason[error_reason(r["error"])] += 1
        written.update(r["trace_key"] for r in rows)
        ledger.add(ok)
        counts.update(new=len(ok), errors=len(bad))
        meter.add(len(rows), sum(r["completion_tokens"] or 0 for r in ok))

    source = batches or (lambda rows: engine_batches(cfg, rows, on_cpu))
    todo = pending
    last_save = time.perf_counter()
    while todo:
        attempt_start = time.perf_counter()
        out = iter(source(todo))
        while True:
            try:
                rows = next(out)
            except StopIteration:
                todo = []
                break
            except (FactoryError, KeyboardInterrupt):
                raise
            except Exception as e:  # a dead engine surfaces as many Ray error types
                todo = [r for r in todo if r["trace_key"] not in written]
                if counts["restarts"] >= teacher.max_engine_restarts:
                    raise FactoryError(
                        f"generate: the engine failed {counts['restarts'] + 1} times ({type(e).__name__}: "
                        f"{str(e)[:300]}); {len(written)} rows were written and are kept, {len(todo)} remain: "
                        "re-run to continue"
                    ) from e
                counts["restarts"] += 1
                if hasattr(out, "close"):
                    out.close()  # let go of the failed job's actors before fresh engines start
                progress(f"generate: the engine failed ({type(e).__name__}); {len(todo)} rows go to a fresh engine "
                         f"(restart {counts['restarts']}/{teacher.max_engine_restarts})")
                break
            write(rows)
            if time.perf_counter() - last_save > CHECKPOINT_S:
                stats.record(run, STAGE, entry(engine_s + time.perf_counter() - attempt_start))
                last_save = time.perf_counter()
        engine_s += time.perf_counter() - attempt_start
    return entry(engine_s)


def error_reason(error: str) -> str:
    """`prompt: TemplateError: ...` -> `prompt:TemplateError`; an engine error -> `engine:<type>`."""
    head, _, rest = error.partition(": ")
    if head == "prompt":
        return f"prompt:{rest.partition(':')[0]}"
    return f"engine:{head}"


def short_of(verified: pa.Table, problems: list[dict], k: int) -> list[dict]:
    """Problems with fewer than k accepted traces in `verified` (problem_id, accepted)."""
    accepted = Counter(pid for pid, ok in zip(verified.column("problem_id").to_pylist(),
                                                verified.column("accepted").to_pylist()) if ok)
    return [p for p in problems if accepted[p["problem_id"]] < k]


def record_per_accepted(run: RunDir) -> None:
    """After verify: GPU-hours, cost and tokens per accepted trace, into stats.json's generate entry."""
    all_stats = run.read_json(stats.STATS_FILE, default={})
    if STAGE not in all_stats or not run.parts("verify"):
        return
    accepted = sum(1 for ok in run.read_stage("verify", columns=["accepted"]).column("accepted").to_pylist() if ok)
    stats.record(run, STAGE, {**all_stats[STAGE], "per_accepted": per_accepted(all_stats[STAGE], accepted)})
