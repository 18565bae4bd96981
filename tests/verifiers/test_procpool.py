"""The worker machinery behind every hard time limit: it must work from any thread."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from verifiers import Verdict, check_math
from verifiers.procpool import Outcome, WorkerPool


def child_pids() -> set[int]:
    """Children of this process (zombies included), read from /proc."""
    me, pids = str(os.getpid()), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if fields[1] == me:
            pids.add(int(stat.parent.name))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def pool():
    pool = WorkerPool(2)
    yield pool
    pool.close()


def in_thread(fn, *args, **kwargs):
    """Run fn in a non-main thread, where signal.alarm-based timeouts cannot work."""
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(
            lambda: (threading.current_thread() is not threading.main_thread(), fn(*args, **kwargs))
        ).result()


def test_overrunning_task_is_killed_from_a_non_main_thread(pool):
    assert pool.map(abs, [(-1,), (-2,)], timeout_s=30) == [Outcome(value=1), Outcome(value=2)]  # both started
    before = child_pids()
    start = time.monotonic()
    off_main, outcomes = in_thread(pool.map, time.sleep, [(60,), (0,)], timeout_s=2)
    elapsed = time.monotonic() - start
    assert off_main
    assert outcomes == [Outcome(error="timeout"), Outcome(value=None)]
    assert elapsed < 6  # the limit plus slack for a loaded machine, far below the task's 60 s
    killed = before - child_pids()
    assert len(killed) == 1 and not any(alive(pid) for pid in killed)
    # The pool replaced the killed worker and keeps working.
    assert pool.map(abs, [(-2,), (-3,)], timeout_s=30) == [Outcome(value=2), Outcome(value=3)]


def test_check_math_hard_timeout_on_slow_sympy_from_a_thread():
    assert check_math(r"\boxed{1}", "1").passed  # warm the worker: startup is not part of the limit
    start = time.monotonic()
    # sympy evaluates 9^(9^9) exactly: minutes of bignum arithmetic unless killed.
    off_main, verdict = in_thread(check_math, r"\boxed{9^{9^{9}}}", "1", timeout_s=1.0)
    assert off_main
    assert verdict == Verdict(False, "timeout", score=0.0)
    assert time.monotonic() - start < 5
    assert check_math(r"\boxed{2}", "2").passed


def test_exception_is_reported_and_worker_survives(pool):
    outcomes = pool.map(int, [("x",), ("7",)], timeout_s=30)
    assert outcomes[0].error.startswith("ValueError: invalid literal")
    assert outcomes[1] == Outcome(value=7)


def test_dead_worker_is_reported_and_replaced(pool):
    outcomes = pool.map(os._exit, [(3,)], timeout_s=30)
    assert outcomes == [Outcome(error="worker_died")]
    assert pool.map(abs, [(-5,)], timeout_s=30) == [Outcome(value=5)]


def test_memory_limit_turns_a_memory_bomb_into_an_error():
    pool = WorkerPool(1, memory_limit_mb=512)
    try:
        [outcome] = pool.map(bytearray, [(2 << 30,)], timeout_s=30)
        assert outcome.error.startswith("MemoryError")
    finally:
        pool.close()


def test_threads_share_a_pool_and_get_their_own_results(pool):
    def run(k):
        return pool.map(abs, [(-k * 10 - i,) for i in range(20)], timeout_s=30)

    with ThreadPoolExecutor(4) as executor:
        results = list(executor.map(run, range(4)))
    for k, outcomes in enumerate(results):
        assert [o.value for o in outcomes] == [k * 10 + i for i in range(20)]


def test_close_kills_idle_workers():
    before = child_pids()
    pool = WorkerPool(2)
    pool.map(abs, [(-1,), (-2,)], timeout_s=30)
    workers = child_pids() - before
    assert len(workers) == 2
    pool.close()
    assert not any(alive(pid) for pid in workers)


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    script = textwrap.dedent(
        """
        import os, sys, time
        from verifiers.procpool import WorkerPool
        pool = WorkerPool(1)
        [outcome] = pool.map(os.getpid, [()], timeout_s=30)
        print(outcome.value, flush=True)
        time.sleep(60)
        """
    )
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    worker_pid = int(parent.stdout.readline())
    assert alive(worker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker_pid)


def test_pool_size_must_be_positive():
    with pytest.raises(ValueError):
        WorkerPool(0)
