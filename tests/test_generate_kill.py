"""kill -9 in the middle of `factory generate`, then the same command again (the real engine, a real subprocess).

What must hold: every problem gets its n traces, no trace_key twice, and the part files written
before the kill are still there byte for byte (resume appends; it never rewrites).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
N_PROBLEMS, N, BATCH = 160, 2, 8
PARTS = N_PROBLEMS * N // BATCH


def _command(problems: Path, run_dir: Path, model: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "factory"), "generate", "--input", str(problems), "--run-dir", str(run_dir),
            "--set", f"teacher.model={model}", "--set", f"teacher.sampling.n={N}",
            "--set", f"teacher.batch_size={BATCH}", "--set", "teacher.sampling.max_tokens=192"]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.parquet")}


def test_kill_9_half_way_then_rerun(tmp_path, tiny_qwen2):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                                for i in range(N_PROBLEMS)))
    run_dir = tmp_path / "run"
    cmd = _command(problems, run_dir, tiny_qwen2)
    env = {**os.environ, "FACTORY_PROGRESS_BARS": "0", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")  # its own local Ray instance, like a user's first run

    # Its own session, so the kill takes the whole group: driver, local Ray, engine processes.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "first.log", "w"))
    started = [proc]
    try:
        deadline = time.monotonic() + 420
        while len(list((run_dir / "generate").glob("*.parquet"))) < PARTS // 2:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no half-way point within 7 minutes"
            time.sleep(0.05)
        started = [proc, *psutil.Process(proc.pid).children(recursive=True)]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        before = _digests(run_dir / "generate")
        assert 0 < len(before) < PARTS, "the kill came after the run had finished"
        # A part the kill cut short is left under its temporary name, never as a part (all of them read).
        assert all(pq.read_metadata(path).num_rows for path in (run_dir / "generate").glob("*.parquet"))

        rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    finally:
        for p in started:  # whatever of the killed run escaped its process group
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass

    on_disk = len(before) * BATCH
    assert f"{on_disk}/{N_PROBLEMS * N} traces already on disk, {N_PROBLEMS * N - on_disk} to write" in rerun.stderr
    traces = pq.read_table(run_dir / "generate").to_pylist()
    keys = [t["trace_key"] for t in traces]
    assert len(traces) == N_PROBLEMS * N and len(set(keys)) == len(keys)
    assert {(t["problem_id"], t["sample_idx"]) for t in traces} == {
        (pid, i) for pid in {t["problem_id"] for t in traces} for i in range(N)}
    assert not list((run_dir / "generate").glob("*.tmp*"))  # the rerun removed what the kill left half-written
    after = _digests(run_dir / "generate")
    assert {name: after.get(name) for name in before} == before
    stats = json.loads((run_dir / "stats.json").read_text())["generate"]
    assert stats["resumed_traces"] == on_disk and stats["new_traces"] == N_PROBLEMS * N - on_disk
