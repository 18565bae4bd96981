"""Generate: problems x n samples -> raw teacher traces, through Ray Data LLM and the vLLM engine.

Part files are appended as batches come back from the engine, so a killed run loses at most the
batches in flight; a re-run skips every `trace_key` already on disk. A changed teacher or sampling
setting changes the keys, so old traces stay and new ones are made.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import pyarrow as pa

from factory.config import PipelineConfig, TeacherConfig
from factory.records import TRACE_SCHEMA, table, trace_key
from factory.storage import RunDir

STAGE = "generate"
# Prompt rendering and row assembly are light; a fraction of a CPU leaves the cores to the engine.
MAP_CPUS = 0.25


def plan_samples(problems: list[dict], teacher: TeacherConfig, done: set[str]) -> list[dict]:
    """One row per (problem, sample_idx) whose trace is not on disk yet."""
    sampling = teacher.sampling.model_dump()
    sampling_json = json.dumps(sampling, sort_keys=True)
    rows = []
    for p in problems:
        for idx in range(teacher.sampling.n):
            key = trace_key(p["problem_id"], idx, teacher.model, teacher.revision, sampling)
            if key not in done:
                rows.append({**p, "sample_idx": idx, "trace_key": key, "teacher": teacher.model, "sampling": sampling_json})
    return rows


def _preprocess(teacher: TeacherConfig):
    from factory.teacher.prompts import prompt_token_ids, render_prompt

    params = {
        "n": 1,  # one row per sample, so every sample has its own key and resumes alone
        "temperature": teacher.sampling.temperature,
        "top_p": teacher.sampling.top_p,
        "max_tokens": teacher.sampling.max_tokens,
    }

    def preprocess(row: dict) -> dict:
        prompt = render_prompt(teacher, row["problem"])
        return {**row, "prompt": prompt, "tokenized_prompt": prompt_token_ids(teacher, prompt), "sampling_params": params}

    return preprocess


def _postprocess(teacher: TeacherConfig):
    from verifiers import split_think

    prefix = teacher.reasoning_prefix
    max_tokens = teacher.sampling.max_tokens

    def postprocess(row: dict) -> dict:
        error = row.get("__inference_error__") or None
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
            prompt_tokens=int(row.get("num_input_tokens") or 0),
            completion_tokens=n_out,
            error=str(error)[:2000] if error else None,
        )
        return out

    return postprocess


def build_llm_processor(cfg: PipelineConfig, on_cpu: bool):
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from factory.teacher.engine import engine_env, engine_kwargs

    teacher = cfg.teacher
    extra = {"placement_group_config": {"bundle_per_worker": {"CPU": 1}}} if on_cpu else {}
    config = vLLMEngineProcessorConfig(
        model_source=teacher.model,
        engine_kwargs=engine_kwargs(teacher, on_cpu),
        runtime_env={"env_vars": engine_env(on_cpu)},
        batch_size=teacher.batch_size,
        concurrency=teacher.concurrency,
        # Prompts are rendered and tokenized in our preprocess, and the engine detokenizes its own
        # output: the separate Ray stages would each hold a CPU-reserving actor, which on a small node
        # starves the map tasks and deadlocks (seen on 2 cores), and add a hop per batch.
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        should_continue_on_error=True,  # a refused prompt becomes a row with its error, not a dead job
        **extra,
    )
    light = {"num_cpus": MAP_CPUS}
    return build_processor(
        config,
        preprocess=_preprocess(teacher),
        postprocess=_postprocess(teacher),
        preprocess_map_kwargs=light,
        postprocess_map_kwargs=light,
    )


def run_generate(
    cfg: PipelineConfig, run: RunDir, problems: list[dict], progress: Callable[[str], None] = print
) -> dict:
    import ray

    from factory.runtime import cluster_has_gpu

    existing = run.read_stage(STAGE, columns=["trace_key"], schema=pa.schema([("trace_key", pa.string())]))
    done = set(existing.column("trace_key").to_pylist())
    pending = plan_samples(problems, cfg.teacher, done)
    total = len(problems) * cfg.teacher.sampling.n
    progress(f"generate: {total - len(pending)}/{total} traces already on disk, {len(pending)} to write")
    written = tokens = 0
    start = time.perf_counter()
    if pending:
        blocks = max(1, min(len(pending) // cfg.teacher.batch_size, 200))
        ds = ray.data.from_items(pending, override_num_blocks=blocks)
        processor = build_llm_processor(cfg, on_cpu=not cluster_has_gpu())
        for batch in processor(ds).iter_batches(batch_size=cfg.teacher.batch_size, batch_format="pyarrow"):
            rows = batch.to_pylist()
            run.write_part(STAGE, table(rows, TRACE_SCHEMA))
            written += len(rows)
            tokens += sum(r["completion_tokens"] or 0 for r in rows)
            rate = tokens / max(time.perf_counter() - start, 1e-9)
            progress(f"generate: {total - len(pending) + written}/{total} traces, {rate:,.0f} output tokens/s")
    return {"new_traces": written, "resumed_traces": total - len(pending), "completion_tokens": tokens}
