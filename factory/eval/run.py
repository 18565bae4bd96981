"""The eval stage: a model's samples on benchmark problems, generated through the teacher's engine path
(stages/generate.py: same prompt rendering, reasoning prefix, Ray Data LLM processor and vLLM settings),
scored with `verifiers.check_math`, written to run_dir/eval and into the model's card.

run_dir/eval/results.json   per benchmark: problems, pass@1, pass@k, maj@k, tokens, truncations
run_dir/eval/samples/<benchmark>.parquet   every sample with its verdict
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pyarrow as pa

from factory import stats
from factory.config import PipelineConfig
from factory.errors import ConfigError, InputError
from factory.storage import RunDir

STAGE = "eval"
SAMPLE_SCHEMA = pa.schema([
    ("benchmark", pa.string()), ("problem_id", pa.string()), ("sample_idx", pa.int32()),
    ("problem", pa.string()), ("answer", pa.string()), ("completion", pa.string()),
    ("passed", pa.bool_()), ("reason", pa.string()), ("extracted", pa.string()),
    ("completion_tokens", pa.int32()), ("finish_reason", pa.string()),
])


def model_path(cfg: PipelineConfig, run: RunDir) -> str:
    from factory.sft.export import FINAL

    if cfg.eval.model:
        return cfg.eval.model
    if not run.exists(FINAL, "config.json"):
        raise InputError(f"eval: no model given and no trained student in {run.path(FINAL)}; pass --model")
    return run.path(FINAL)


def student_config(cfg: PipelineConfig, model: str) -> PipelineConfig:
    """A pipeline config whose teacher is the model under test, so generation takes the teacher's path."""
    ev = cfg.eval
    teacher = cfg.teacher.model_copy(update={
        "model": model, "revision": None, "backend": "vllm", "mode": "reasoning", "chat_template": None,
        "sampling": ev.sampling, "prompt_template": ev.prompt_template, "system_prompt": ev.system_prompt,
        "reasoning_prefix": ev.reasoning_prefix, "engine": ev.engine, "batch_size": ev.batch_size,
    })
    return cfg.model_copy(update={"teacher": teacher, "sources": []})


def score_samples(traces: list[dict], timeout_s: float) -> list[dict]:
    from verifiers import Verdict
    from verifiers.math_check import check_math_batch

    verdicts = check_math_batch([t["completion"] or "" for t in traces], [t["answer"] for t in traces], timeout_s=timeout_s)
    rows = []
    for t, v in zip(traces, verdicts):
        if t["completion"] is None:  # the engine refused the prompt
            v = Verdict(False, "generation_error")
        rows.append({"benchmark": t["source"], "problem_id": t["problem_id"], "sample_idx": t["sample_idx"],
                     "problem": t["problem"], "answer": t["answer"], "completion": t["completion"],
                     "passed": v.passed, "reason": v.reason, "extracted": v.extracted,
                     "completion_tokens": t["completion_tokens"], "finish_reason": t["finish_reason"]})
    return rows


def summary_table(results: dict) -> str:
    ks = sorted({key for b in results["benchmarks"].values() for key in b if key.startswith(("pass@", "maj@"))},
                key=lambda s: (s.split("@")[0] != "pass", int(s.split("@")[1])))
    lines = ["| benchmark | problems | " + " | ".join(ks) + " | mean tokens |",
             "| --- | --- | " + " | ".join("---" for _ in ks) + " | --- |"]
    for name, b in results["benchmarks"].items():
        cells = " | ".join("n/a" if b.get(k) is None else f"{100 * b[k]:.1f}" for k in ks)
        lines.append(f"| {name} | {b['scored_problems']} | {cells} | {b['mean_completion_tokens']} |")
    return "\n".join(lines)


def _update_model_card(model: str, results: dict) -> bool:
    from factory.sft.export import CARD, with_eval_section

    card = Path(model) / CARD
    if not Path(model).is_dir() or not os.access(model, os.W_OK):
        return False
    text = card.read_text(encoding="utf-8") if card.exists() else f"# {Path(model).name}\n"
    s = results["sampling"]
    note = (f"Scored with `verifiers.check_math` (Math-Verify) on {s['n']} samples per problem "
            f"(temperature {s['temperature']}, top_p {s['top_p']}, max_tokens {s['max_tokens']}); values in %.")
    card.write_text(with_eval_section(text, summary_table(results) + "\n\n" + note), encoding="utf-8")
    return True


def run_eval(cfg: PipelineConfig, run: RunDir, address: str | None, progress: Callable[[str], None] = print) -> dict:
    from factory.eval.benchmarks import load_benchmark
    from factory.eval.metrics import score_benchmark
    from factory.pipeline import fingerprint
    from factory.runtime import cluster_has_gpu, init_ray, require_engine
    from factory.sft.data import source_identity
    from factory.stages.generate import engine_batches, plan_samples
    from factory.teacher.model import check_model

    ev = cfg.eval
    if not ev.benchmarks:
        raise ConfigError("eval.benchmarks: no benchmark file given (--benchmark FILE or eval.benchmarks in the pipeline)")
    model = model_path(cfg, run)
    fp = fingerprint(ev.model_dump(exclude={"model"}), source_identity(model))
    if run.is_done(STAGE, fp):
        progress("eval: already done for this model and these settings")
        return run.read_json(f"{STAGE}/results.json")
    require_engine()
    try:
        check_model(model)
    except ConfigError as e:
        raise ConfigError(str(e).replace("teacher.model", "eval.model")) from None
    problems, rejects = [], []
    for bench in ev.benchmarks:
        p, r = load_benchmark(bench)
        problems += p
        rejects += r
    if not problems:
        raise InputError("eval: no usable problem in the benchmark files (each needs a problem and an answer)")
    student = student_config(cfg, model)
    rows = plan_samples(problems, student, skip=set())
    progress(f"eval: {len(problems)} problems x {ev.sampling.n} samples from {model}")
    init_ray(address)
    with stats.timed(run, STAGE) as entry:
        traces = [t for batch in engine_batches(student, rows, on_cpu=not cluster_has_gpu()) for t in batch]
        samples = score_samples(traces, ev.timeout_s)
        results = {"model": model, "sampling": ev.sampling.model_dump(), "k": ev.k, "benchmarks": {}}
        run.reset_stage(STAGE)
        for name in dict.fromkeys(p["source"] for p in problems):
            mine = [s for s in samples if s["benchmark"] == name]
            results["benchmarks"][name] = score_benchmark(mine, ev.k)
            run.write_part(f"{STAGE}/samples", pa.Table.from_pylist(mine, schema=SAMPLE_SCHEMA), f"{name}.parquet")
        run.write_json(f"{STAGE}/results.json", results)
        run.write_text("rejects/eval.jsonl", "".join(json.dumps(r) + "\n" for r in rejects))
        results["model_card_updated"] = _update_model_card(model, results)
        entry.update({"in": len(rows), "out": len(samples), "model": model,
                      "rejected": stats.reasons(r["reason"] for r in rejects),
                      **{f"{b}.{k}": v for b, r in results["benchmarks"].items() for k, v in r.items() if "@" in k}})
        run.mark_done(STAGE, fp)
    progress(f"eval: scores in {run.path(STAGE, 'results.json')}, samples in {run.path(STAGE, 'samples')}")
    return results
