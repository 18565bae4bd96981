"""The generate stage without the engine: scale settings, accounting, progress, and rejection-sampling
rounds with real teacher traces (math_cot_100.jsonl) replayed where the engine would write them.

The tiny random model's text never passes a math check, so rounds are driven by real completions:
`run_generate(batches=...)` takes them at the engine's place; verify and the round loop are the real ones.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from factory.config import load_config
from factory.errors import ConfigError, FactoryError
from factory.records import TRACE_SCHEMA
from factory.storage import RunDir
from tests.conftest import MATH_COT


def test_scale_keys_reach_the_engine_and_the_processor(tiny_qwen2):
    from factory.teacher.engine import engine_kwargs, processor_kwargs

    cfg = load_config(overrides=[
        f"teacher.model={tiny_qwen2}", "teacher.tensor_parallel_size=4", "teacher.pipeline_parallel_size=2",
        "teacher.max_model_len=1024", "teacher.enable_prefix_caching=false", "teacher.concurrency=3",
        "teacher.batch_size=64", "teacher.placement_strategy=STRICT_PACK", "teacher.accelerator_type=H100",
        "teacher.sampling.max_tokens=512",
    ])
    gpu = engine_kwargs(cfg.teacher, on_cpu=False)
    assert (gpu["tensor_parallel_size"], gpu["pipeline_parallel_size"], gpu["max_model_len"]) == (4, 2, 1024)
    assert gpu["enable_prefix_caching"] is False and "dtype" not in gpu
    assert "max_num_seqs" not in gpu  # this driver has no GPU: vLLM's table would describe the wrong device
    proc = processor_kwargs(cfg.teacher, on_cpu=False)
    assert proc["placement_group_config"] == {"bundle_per_worker": {"GPU": 1, "CPU": 1}, "strategy": "STRICT_PACK"}
    assert (proc["concurrency"], proc["batch_size"], proc["accelerator_type"]) == (3, 64, "H100")
    cpu = processor_kwargs(cfg.teacher, on_cpu=True)
    assert cpu["placement_group_config"]["bundle_per_worker"] == {"CPU": 1} and "accelerator_type" not in cpu
    # Ray Data LLM accepts them as they are.
    from ray.data.llm import vLLMEngineProcessorConfig

    vLLMEngineProcessorConfig(model_source=str(tiny_qwen2), engine_kwargs=gpu, **proc)


def test_engines_get_vllms_offline_batch_limits(tiny_qwen2):
    """Ray Data LLM's engines would get vLLM's generic 128 sequences per step; vllm.LLM's are used instead."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.usage.usage_lib import UsageContext

    from factory.stages.generate import _preprocess
    from factory.teacher.engine import engine_kwargs, processor_kwargs

    tokens, seqs = (d[UsageContext.LLM_CLASS] for d in EngineArgs.get_batch_defaults(1))
    cfg = load_config(overrides=[f"teacher.model={tiny_qwen2}"])
    cpu = engine_kwargs(cfg.teacher, on_cpu=True)
    assert (cpu["max_num_seqs"], cpu["max_num_batched_tokens"], cpu["disable_log_stats"]) == (seqs, tokens, True)
    served = engine_kwargs(cfg.teacher, on_cpu=True, offline=False)  # serve-teacher keeps vLLM's server defaults
    assert not {"max_num_seqs", "max_num_batched_tokens", "disable_log_stats"} & set(served)
    # Enough batches in flight for 4x the engine's sequences.
    assert processor_kwargs(cfg.teacher, on_cpu=True)["max_concurrent_batches"] == max(8, 4 * -(-seqs // 256))
    # Keys the user sets win.
    own = load_config(overrides=[f"teacher.model={tiny_qwen2}", "teacher.engine.max_num_seqs=40",
                                 "teacher.engine.disable_log_stats=false", "teacher.batch_size=4"])
    assert (engine_kwargs(own.teacher, on_cpu=True)["max_num_seqs"], engine_kwargs(own.teacher, on_cpu=True)["disable_log_stats"]) == (40, False)
    assert processor_kwargs(own.teacher, on_cpu=True)["max_concurrent_batches"] == 40
    # Ray Data LLM's engine metrics (per-step stats through Ray's metrics agent) only when asked for.
    assert (processor_kwargs(cfg.teacher, on_cpu=True)["log_engine_metrics"],
            processor_kwargs(own.teacher, on_cpu=True)["log_engine_metrics"]) == (False, True)
    own.teacher.max_concurrent_batches = 3
    assert processor_kwargs(own.teacher, on_cpu=True)["max_concurrent_batches"] == 3
    # Only the finished output comes back from the engine, as vllm.LLM.generate asks for.
    row = _preprocess(cfg)({"problem": "1+1?", "source": "s", "problem_id": "p", "sample_idx": 0})
    assert row["sampling_params"]["output_kind"] == RequestOutputKind.FINAL_ONLY


@pytest.mark.parametrize("override, message", [
    ("teacher.engine.tensor_parallel_size=2", "engine.tensor_parallel_size: set teacher.tensor_parallel_size instead"),
    ("teacher.max_model_len=1024", "must be below max_model_len"),  # max_tokens 4096 by default
    ("teacher.placement_strategy=ANYWHERE", "teacher.placement_strategy"),
    ("teacher.tensor_parallel_size=0", "teacher.tensor_parallel_size"),
    ("teacher.max_retries=-1", "teacher.max_retries"),
])
def test_bad_scale_settings_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(overrides=[override])


def test_rounds_need_verify():
    with pytest.raises(ConfigError, match="until_accepted: needs both"):
        load_config(overrides=["teacher.until_accepted=2", "stages=[generate]"])


def test_an_engine_bigger_than_the_cluster_fails_at_once():
    from factory.teacher.engine import check_fits

    teacher = load_config(overrides=["teacher.tensor_parallel_size=8"]).teacher
    with pytest.raises(ConfigError, match="8 GPUs per engine, but the cluster has 4"):
        check_fits(teacher, {"GPU": 4.0, "CPU": 64.0})
    check_fits(teacher, {"GPU": 8.0})
    check_fits(teacher, {"CPU": 2.0})  # no GPU at all: the CPU engine


def test_accounting_per_source_gpu_hours_and_cost():
    from factory.stages.generate import Ledger, per_accepted

    traces = pa.table({"source": ["gsm8k", "gsm8k", "math"], "prompt_tokens": [100, 200, 50],
                       "completion_tokens": [1000, 3000, 500]})
    cfg = load_config(overrides=["teacher.price_per_gpu_hour=2.5", "teacher.price_per_million_output_tokens=2.0"])
    entry = Ledger(traces).entry(cfg.teacher, engine_seconds=7200, gpus=8)
    assert entry["sources"] == {"gsm8k": {"traces": 2, "prompt_tokens": 300, "completion_tokens": 4000},
                                "math": {"traces": 1, "prompt_tokens": 50, "completion_tokens": 500}}
    assert (entry["prompt_tokens"], entry["completion_tokens"], entry["gpu_hours"]) == (350, 4500, 16.0)
    assert entry["cost"] == {"gpu": 40.0, "tokens": pytest.approx(0.009), "total": pytest.approx(40.009)}
    assert per_accepted(entry, 2) == {"accepted": 2, "gpu_hours": 8.0, "cost": pytest.approx(20.0045),
                                      "completion_tokens": 2250.0}
    free = Ledger(traces).entry(load_config().teacher, engine_seconds=60, gpus=0)
    assert free["cost"] == {"gpu": None, "tokens": None, "total": None} and free["gpu_hours"] == 0
    assert per_accepted(free, 0)["cost"] is None


def test_progress_reports_rows_rate_and_time_left():
    from factory.stages.generate import Meter

    messages = []
    meter = Meter(total=100, done=20, progress=messages.append)
    meter.add(10, 1000)  # the first batch comes after engine load: no rate yet
    meter.first -= 2.0  # as if the next batch came 2 s later
    meter.add(10, 4000)
    assert messages[0].startswith("generate: 30/100 traces (30%), 0 output tokens/s")
    assert messages[1].startswith("generate: 40/100 traces (40%), ")
    rate = int(messages[1].split(", ")[1].split(" ")[0].replace(",", ""))
    assert 1900 <= rate <= 2000  # 4000 tokens in a little over 2 s
    assert messages[1].endswith("left") and "about 1" in messages[1]  # 60 rows at 5 rows/s: about 12 s


# --- rejection-sampling rounds on real traces -------------------------------------------------

def _real_completions() -> tuple[list[dict], dict[str, list[str]]]:
    """The first 40 problems of math_cot_100.jsonl, and their 8 real completions each."""
    from factory.records import problem_id

    problems, completions = [], {}
    for line in MATH_COT.open():
        row = json.loads(line)
        if len(problems) == 40:
            break
        pid = problem_id("math_cot", row["question"])
        problems.append({"problem_id": pid, "source": "math_cot", "domain": "math", "problem": row["question"],
                         "answer": row["answer"], "tests": None, "language": "en"})
        completions[pid] = row["code"]
    return problems, completions


def _replay(completions: dict[str, list[str]], asked: list[int]):
    """Stands in for the engine: the real completion number sample_idx for each planned row."""

    def batches(rows: list[dict]):
        asked.append(len(rows))
        for i in range(0, len(rows), 16):
            out = []
            for r in rows[i:i + 16]:
                text = completions[r["problem_id"]][r["sample_idx"] % 8]
                out.append({**r, "prompt": r["problem"], "completion": text, "response": text, "finish_reason": "stop",
                            "prompt_tokens": 10, "completion_tokens": len(text.split()), "error": None})
            yield out

    return batches


@pytest.fixture(scope="module")
def rounds_run(tmp_path_factory):
    from factory import stats
    from factory.pipeline import rejection_rounds, verify_stage
    from factory.runtime import init_ray
    from factory.stages.generate import run_generate

    init_ray()
    problems, completions = _real_completions()
    cfg = load_config(overrides=["teacher.sampling.n=2", "teacher.until_accepted=2", "teacher.max_rounds=3",
                                 "verify.require_think=false", "verify.language.enabled=false"],
                      run_dir=str(tmp_path_factory.mktemp("rounds")))
    run = RunDir(cfg.run_dir)
    asked: list[int] = []
    messages: list[str] = []

    def gen(ps: list[dict], first_idx: int) -> None:
        entry = run_generate(cfg, run, ps, messages.append, first_idx, batches=_replay(completions, asked))
        stats.record(run, "generate", entry)

    def pipeline():
        gen(problems, 0)
        verify_stage(cfg, run, None, messages.append)
        rejection_rounds(cfg, run, problems, gen, lambda: verify_stage(cfg, run, None, messages.append), messages.append)

    pipeline()
    first_asked, first_messages = list(asked), list(messages)
    asked.clear()
    messages.clear()
    pipeline()  # the same pipeline again: a resumed run
    return run, problems, first_asked, list(asked), list(messages), first_messages


def test_rounds_sample_again_only_problems_short_of_k(rounds_run):
    run, problems, asked, _, _, _ = rounds_run
    verified = run.read_stage("verify").to_pylist()
    generated = run.read_stage("generate", schema=TRACE_SCHEMA)
    assert len(verified) == len(generated) == sum(asked)  # verify covers every round's traces
    by_problem: dict[str, list[dict]] = {}
    for r in verified:
        by_problem.setdefault(r["problem_id"], []).append(r)
    for pid, rows in by_problem.items():
        idx = sorted(r["sample_idx"] for r in rows)
        rounds = len(idx) // 2
        assert idx == list(range(2 * rounds))  # whole rounds, new sample indices each round
        accepted_before = [sum(r["accepted"] for r in rows if r["sample_idx"] < 2 * k) for k in range(1, rounds + 1)]
        # Another round only while short of k=2 accepted; at most max_rounds=3 rounds.
        assert all(a < 2 for a in accepted_before[:-1]) and rounds <= 3
        assert rounds == 3 or accepted_before[-1] >= 2
    rounds_used = {len(rows) // 2 for rows in by_problem.values()}
    assert {1, 3} <= rounds_used  # real data: some problems are easy, some never reach k
    assert asked[0] == 80 and len(asked) == 3 and asked[1] > asked[2] > 0


def test_each_round_verifies_only_its_new_traces(rounds_run):
    import re

    run, _, asked, _, _, messages = rounds_run
    verified_now = [int(re.search(r"\((\d+) verified in this run\)", m).group(1)) for m in messages if m.startswith("verify: ")]
    assert verified_now == asked  # 80, then each round's samples alone
    keys = run.read_stage("verify", columns=["trace_key"]).column("trace_key").to_pylist()
    assert len(keys) == len(set(keys)) == sum(asked)


def test_verify_drops_an_increment_a_kill_left_unrecorded(rounds_run, tmp_path):
    import shutil

    from factory.pipeline import verify_stage
    from factory.stages.verify import INCREMENTS

    run = RunDir(str(tmp_path / "copy"))
    shutil.copytree(rounds_run[0].uri, run.uri)
    recorded = run.read_json(INCREMENTS)
    last = list(recorded["increments"])[-1]
    stray = [p for p in run.parts("verify") if p.rsplit("/", 1)[-1].startswith(last + "--")]
    # As if killed after moving the last round's files in but before recording them.
    del recorded["increments"][last]
    run.write_json(INCREMENTS, recorded)
    (tmp_path / "copy" / "verify" / "_SUCCESS").unlink()
    cfg = load_config(overrides=["verify.require_think=false", "verify.language.enabled=false"], run_dir=run.uri)
    messages: list[str] = []
    verify_stage(cfg, run, None, messages.append)
    assert stray and not any(run.exists("verify", p.rsplit("/", 1)[-1]) for p in stray)
    keys = run.read_stage("verify", columns=["trace_key"]).column("trace_key").to_pylist()
    assert len(keys) == len(set(keys)) == len(run.read_stage("generate", schema=TRACE_SCHEMA))
    assert f"({rounds_run[2][-1]} verified in this run)" in messages[-1]  # the last round's traces, again


def test_rounds_resume_without_new_samples(rounds_run):
    _, _, _, asked_again, messages, _ = rounds_run
    assert asked_again == []  # every sample of every round is on disk: the engine is never asked
    assert sum("verify: already done" in m for m in messages) == 3


def test_per_accepted_after_verify(rounds_run):
    from factory.stages.generate import record_per_accepted

    from factory import stats

    run = rounds_run[0]
    stats.record(run, "generate", {**run.read_json("stats.json")["generate"], "gpu_hours": 2.0, "cost": {"total": 10.0}})
    record_per_accepted(run)
    entry = run.read_json("stats.json")["generate"]
    accepted = sum(run.read_stage("verify", columns=["accepted"]).column("accepted").to_pylist())
    assert entry["per_accepted"]["accepted"] == accepted > 0
    assert entry["per_accepted"]["cost"] == pytest.approx(10.0 / accepted)


def _failing_after_one_batch(completions: dict[str, list[str]], calls: list[int]):
    """The replayed engine, made to fail after its first batch on the first call, as a dead engine's job does."""
    replay = _replay(completions, [])

    def batches(rows: list[dict]):
        calls.append(len(rows))
        for i, batch in enumerate(replay(rows)):
            if len(calls) == 1 and i == 1:
                raise RuntimeError("ActorDiedError: the engine actor died (injected)")
            yield batch

    return batches


def test_a_failed_job_goes_on_with_fresh_engines_then_stops_keeping_its_rows(tmp_path):
    from factory.stages.generate import STAGE, run_generate

    problems, completions = _real_completions()
    cfg = load_config(overrides=["teacher.sampling.n=2"], run_dir=str(tmp_path / "a"))
    calls: list[int] = []
    messages: list[str] = []
    entry = run_generate(cfg, RunDir(cfg.run_dir), problems, messages.append,
                         batches=_failing_after_one_batch(completions, calls))
    assert calls == [80, 64] and entry["engine_restarts"] == 1 and entry["new_traces"] == 80
    assert any("the engine failed (RuntimeError); 64 rows go to a fresh engine (restart 1/2)" in m for m in messages)
    keys = RunDir(cfg.run_dir).read_stage(STAGE, columns=["trace_key"]).column("trace_key").to_pylist()
    assert len(keys) == len(set(keys)) == 80

    cfg = load_config(overrides=["teacher.sampling.n=2", "teacher.max_engine_restarts=0"], run_dir=str(tmp_path / "b"))
    half_written = tmp_path / "b" / STAGE / "part-killed.parquet.tmp"  # what a kill -9 mid-write leaves
    half_written.parent.mkdir(parents=True)
    half_written.write_bytes(b"PAR1 cut short")
    with pytest.raises(FactoryError, match="16 rows were written and are kept, 64 remain: re-run to continue"):
        run_generate(cfg, RunDir(cfg.run_dir), problems, messages.append,
                     batches=_failing_after_one_batch(completions, []))
    assert len(RunDir(cfg.run_dir).read_stage(STAGE)) == 16 and not half_written.exists()
