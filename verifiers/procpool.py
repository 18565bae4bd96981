"""Long-lived worker processes that run one task at a time under a hard wall-clock limit.

Why not ``multiprocessing.Pool``: it cannot kill one stuck task. Why not ``signal.alarm`` (what
Math-Verify does): it only works in the main thread, and Ray Data runs ``map_batches`` in actor threads.
Here a task that overruns its limit gets its worker SIGKILLed (with its whole process group) and a fresh
worker started, from any thread.

Workers are plain ``python -c`` subprocesses talking pickle over two pipes, not ``multiprocessing``
children: spawn/forkserver re-import the caller's ``__main__`` (which breaks unguarded scripts), and fork
is unsafe in the multi-threaded processes Ray runs. A worker exits when its task pipe closes, so workers
never outlive their parent.

Tasks are ``fn(*args)`` with ``fn`` a module-level function importable in the worker (pickled by name).
"""

from __future__ import annotations

import atexit
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

# Runs in the worker before anything else; stdlib only, since sys.path is not set up yet.
_BOOT = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "tasks = Connection(int(sys.argv[1]), writable=False)\n"
    "results = Connection(int(sys.argv[2]), readable=False)\n"
    "sys.path[:] = tasks.recv()\n"
    "from verifiers.procpool import serve\n"
    "serve(tasks, results)\n"
)

TIMEOUT = "timeout"
WORKER_DIED = "worker_died"


@dataclass(frozen=True)
class Outcome:
    """``error`` is None on success, "timeout", "worker_died", or "<ExceptionType>: <message>"."""

    value: Any = None
    error: str | None = None


def serve(tasks: Connection, results: Connection) -> None:
    """Worker loop: setup message, then ``(fn, args)`` tasks until the parent closes the pipe."""
    preload, memory_limit_mb = tasks.recv()
    for module in preload:
        __import__(module)
    if memory_limit_mb:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    results.send("ready")
    while True:
        try:
            fn, args = tasks.recv()
        except EOFError:
            return
        try:
            reply = (True, fn(*args))
        except BaseException as exc:  # report, never die: the parent decides what a failure means
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            results.send(reply)
        except Exception as exc:  # unpicklable result
            results.send((False, f"{type(exc).__name__}: {exc}"))


class _Worker:
    def __init__(self, preload: tuple[str, ...], memory_limit_mb: int | None):
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(task_r), str(result_w)],
            pass_fds=(task_r, result_w),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: killing it takes any children too
        )
        os.close(task_r)
        os.close(result_w)
        self.tasks = Connection(task_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.tasks.send(list(sys.path))
        self.tasks.send((preload, memory_limit_mb))
        self.ready = False

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.tasks.close()
        self.results.close()


class WorkerPool:
    """A fixed number of worker slots, shared by all threads of this process."""

    def __init__(
        self,
        size: int,
        preload: Sequence[str] = (),
        memory_limit_mb: int | None = None,
        startup_timeout_s: float = 120.0,
    ):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = size
        self.preload = tuple(preload)
        self.memory_limit_mb = memory_limit_mb
        self.startup_timeout_s = startup_timeout_s
        self.pid = os.getpid()
        # Slots hold a started _Worker or None (start on first use); a thread takes slots while it runs.
        self._slots: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        for _ in range(size):
            self._slots.put(None)

    def map(self, fn: Callable, arg_tuples: Sequence[tuple], timeout_s: float) -> list[Outcome]:
        """Run ``fn(*args)`` for each tuple, each under ``timeout_s`` seconds of wall time."""
        if not arg_tuples:
            return []
        taken = [self._slots.get()]  # wait for one slot, then take whatever else is free
        while len(taken) < min(self.size, len(arg_tuples)):
            try:
                taken.append(self._slots.get_nowait())
            except queue.Empty:
                break
        idle: list[_Worker] = []
        starting: dict[_Worker, float] = {}
        busy: dict[_Worker, tuple[int, float]] = {}
        for worker in taken:
            if worker is not None and worker.proc.poll() is not None:
                worker.kill()  # died while idle: reap it
                worker = None
            if worker is None:
                worker = self._start()
            if worker.ready:
                idle.append(worker)
            else:  # started by an earlier call that ended before its "ready" came
                starting[worker] = time.monotonic() + self.startup_timeout_s
        pending = deque(enumerate(arg_tuples))
        outcomes: list[Outcome | None] = [None] * len(arg_tuples)
        try:
            while pending or busy:
                while pending and idle:
                    worker = idle.pop()
                    index, args = pending.popleft()
                    try:
                        worker.tasks.send((fn, args))
                    except OSError:  # worker gone between tasks: replace it, retry the task
                        pending.appendleft((index, args))
                        worker.kill()
                        replacement = self._start()
                        starting[replacement] = time.monotonic() + self.startup_timeout_s
                        continue
                    busy[worker] = (index, time.monotonic() + timeout_s)
                if not busy and not starting:
                    raise RuntimeError("worker pool has no live workers")
                deadlines = [d for _, d in busy.values()] + list(starting.values())
                wait_s = max(0.0, min(deadlines) - time.monotonic())
                readable = set(wait([w.results for w in (*busy, *starting)], timeout=wait_s))
                now = time.monotonic()
                for worker in list(starting):
                    if worker.results in readable:
                        del starting[worker]
                        if self._recv_ready(worker):
                            idle.append(worker)
                            continue
                        raise RuntimeError(f"verifier worker failed to start (exit code {worker.proc.poll()})")
                    if now > starting[worker]:
                        worker.kill()
                        raise RuntimeError(f"verifier worker did not start within {self.startup_timeout_s}s")
                for worker in list(busy):
                    index, deadline = busy[worker]
                    if worker.results in readable:
                        del busy[worker]
                        try:
                            ok, value = worker.results.recv()
                        except (EOFError, OSError):
                            outcomes[index] = Outcome(error=WORKER_DIED)
                            worker.kill()
                            replacement = self._start()
                            starting[replacement] = now + self.startup_timeout_s
                            continue
                        outcomes[index] = Outcome(value=value) if ok else Outcome(error=value)
                        idle.append(worker)
                    elif now >= deadline:
                        del busy[worker]
                        outcomes[index] = Outcome(error=TIMEOUT)
                        worker.kill()
                        replacement = self._start()
                        starting[replacement] = now + self.startup_timeout_s
        finally:
            # On an exception (or KeyboardInterrupt) mid-batch, busy workers hold stale tasks: kill them.
            for worker in busy:
                worker.kill()
            for worker in idle:
                self._slots.put(worker)
            # Workers still starting are kept; the next call waits for their "ready".
            for worker in starting:
                self._slots.put(worker)
            for _ in range(len(taken) - len(idle) - len(starting)):
                self._slots.put(None)
        return outcomes  # type: ignore[return-value]

    def _start(self) -> _Worker:
        return _Worker(self.preload, self.memory_limit_mb)

    @staticmethod
    def _recv_ready(worker: _Worker) -> bool:
        try:
            worker.ready = worker.results.recv() == "ready"
        except (EOFError, OSError):
            worker.ready = False
        return worker.ready

    def close(self) -> None:
        """Kill idle workers. Workers in use by another thread are left to that thread."""
        while True:
            try:
                worker = self._slots.get_nowait()
            except queue.Empty:
                return
            if worker is not None and self.pid == os.getpid():
                worker.kill()


_POOLS: dict[tuple, WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def get_pool(size: int, preload: Sequence[str] = (), memory_limit_mb: int | None = None) -> WorkerPool:
    """The process-wide pool for these settings, created on first use and reused across calls."""
    key = (size, tuple(preload), memory_limit_mb)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None or pool.pid != os.getpid():  # a forked child must not share its parent's workers
            pool = _POOLS[key] = WorkerPool(size, preload, memory_limit_mb)
        return pool


@atexit.register
def close_pools() -> None:
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()
