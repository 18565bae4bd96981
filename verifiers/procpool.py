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
import pickle
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
            fn, args = pickle.loads(tasks.recv_bytes())
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
        """Run ``fn(*args)`` for each tuple, each under ``timeout_s`` seconds of wall time.

        Each worker gets a few tasks queued ahead so it never idles waiting for the parent's next
        send; a task's clock starts when the worker reaches it (its predecessor's result arrived).
        """
        if not arg_tuples:
            return []
        taken = [self._slots.get()]  # wait for one slot, then take whatever else is free
        while len(taken) < min(self.size, len(arg_tuples)):
            try:
                taken.append(self._slots.get_nowait())
            except queue.Empty:
                break
        run = _MapRun(self, fn, arg_tuples, timeout_s)
        try:
            for worker in taken:
                run.add_worker(worker)
            return run.run()
        finally:
            for worker in run.workers:
                if run.inflight[worker] or worker.proc.poll() is not None:
                    worker.kill()  # stale queued tasks (we are unwinding an exception) or dead
                    self._slots.put(None)
                else:
                    self._slots.put(worker)  # idle, or still starting: the next call waits for "ready"
            for _ in range(len(taken) - len(run.workers)):  # a worker failed to start mid-way
                self._slots.put(None)

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


# Tasks queued ahead per worker. Their pickled bytes stay below the pipe's capacity (64 KiB on Linux)
# so that sending never blocks on a worker stuck in a long task: the parent must stay free to kill it.
_MAX_QUEUED = 16
_MAX_QUEUED_BYTES = 48 * 1024


class _MapRun:
    """The state of one ``WorkerPool.map`` call over the workers it holds."""

    def __init__(self, pool: WorkerPool, fn: Callable, arg_tuples: Sequence[tuple], timeout_s: float):
        self.pool, self.fn, self.timeout_s = pool, fn, timeout_s
        self.pending = deque(enumerate(arg_tuples))
        self.outcomes: list[Outcome | None] = [None] * len(arg_tuples)
        self.remaining = len(arg_tuples)
        self.workers: list[_Worker] = []
        self.inflight: dict[_Worker, deque] = {}  # (index, args, nbytes) in the order sent
        self.queued_bytes: dict[_Worker, int] = {}
        self.clock: dict[_Worker, float] = {}  # when the head task started, or when startup began

    def add_worker(self, worker: _Worker | None) -> None:
        if worker is not None and worker.proc.poll() is not None:
            worker.kill()  # died while idle: reap it
            worker = None
        if worker is None:
            worker = self.pool._start()
        self.workers.append(worker)
        self.inflight[worker] = deque()
        self.queued_bytes[worker] = 0
        self.clock[worker] = time.monotonic()

    def replace(self, worker: _Worker) -> None:
        """Kill a worker; its queued tasks go back to the front of the line."""
        self.pending.extendleft((index, args) for index, args, _ in reversed(self.inflight.pop(worker)))
        del self.queued_bytes[worker], self.clock[worker]
        worker.kill()
        self.workers.remove(worker)
        self.add_worker(None)

    def feed(self) -> None:
        """Queue tasks round-robin on ready workers, shortest queue first, within the queue bounds."""
        while self.pending:
            ready = [w for w in self.workers if w.ready and len(self.inflight[w]) < _MAX_QUEUED]
            if not ready:
                return
            worker = min(ready, key=lambda w: len(self.inflight[w]))
            index, args = self.pending[0]
            payload = pickle.dumps((self.fn, args), protocol=pickle.HIGHEST_PROTOCOL)
            queue_ = self.inflight[worker]
            if queue_ and self.queued_bytes[worker] + len(payload) > _MAX_QUEUED_BYTES:
                return  # all shortest queues are full by bytes; results will make room
            try:
                worker.tasks.send_bytes(payload)
            except OSError:  # died between tasks
                self.replace(worker)
                continue
            self.pending.popleft()
            if not queue_:
                self.clock[worker] = time.monotonic()
            queue_.append((index, args, len(payload)))
            self.queued_bytes[worker] += len(payload)

    def finish_head(self, worker: _Worker, outcome: Outcome) -> None:
        index, _, nbytes = self.inflight[worker].popleft()
        self.queued_bytes[worker] -= nbytes
        self.outcomes[index] = outcome
        self.remaining -= 1
        self.clock[worker] = time.monotonic()

    def run(self) -> list[Outcome]:
        startup_s = self.pool.startup_timeout_s
        while self.remaining:
            self.feed()
            watched = [w for w in self.workers if self.inflight[w] or not w.ready]
            deadlines = [self.clock[w] + (self.timeout_s if w.ready else startup_s) for w in watched]
            readable = set(wait([w.results for w in watched], timeout=max(0.0, min(deadlines) - time.monotonic())))
            now = time.monotonic()
            for worker in watched:
                if not worker.ready:
                    if worker.results in readable:
                        if not self.pool._recv_ready(worker):
                            raise RuntimeError(f"verifier worker failed to start (exit {worker.proc.poll()})")
                    elif now > self.clock[worker] + startup_s:
                        raise RuntimeError(f"verifier worker did not start within {startup_s}s")
                elif worker.results in readable:
                    self.collect(worker)
                elif now >= self.clock[worker] + self.timeout_s:
                    self.finish_head(worker, Outcome(error=TIMEOUT))
                    self.replace(worker)
        return self.outcomes  # type: ignore[return-value]

    def collect(self, worker: _Worker) -> None:
        """Take every result the worker has sent so far."""
        while self.inflight[worker] and worker.results.poll():
            try:
                ok, value = worker.results.recv()
            except (EOFError, OSError):  # the worker died in its head task
                self.finish_head(worker, Outcome(error=WORKER_DIED))
                self.replace(worker)
                return
            self.finish_head(worker, Outcome(value=value) if ok else Outcome(error=value))


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
