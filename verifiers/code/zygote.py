"""Pre-forked sandboxes: a zygote process started once inside the namespaces forks a child per run.

Creating the namespaces (bwrap: ~5 ms) and starting an interpreter (~10 ms) is paid once per zygote
instead of once per run; what isolates one run from the next is in zygote_server.py, which runs
inside. Here: starting a zygote, handing it one run at a time, and a thread-safe pool of them (one
per concurrent run). A zygote found dead before a run is replaced and the run retried (the program
had not started); one that dies during a run fails that run with ``sandbox_error`` and is replaced.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import struct
import subprocess
import threading
import time
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from verifiers.code.run_io import Limits, Pipes, RunResult, clean_env, collect, remove_tree

log = logging.getLogger(__name__)

SERVER_SOURCE = (Path(__file__).with_name("zygote_server.py")).read_text(encoding="utf-8")
_HEADER = struct.Struct("!I")
_START_S = 30.0  # a zygote's start on a loaded machine
_REPORT_S = 10.0  # after a kill request: killing, reaping and emptying the scratch space


class ZygoteError(RuntimeError):
    """The zygote could not start, or died."""


class ZygoteDied(ZygoteError):
    """The zygote was gone before the run started: the program never ran."""


class Zygote:
    """One zygote process and its control socket. One run at a time: the pool hands it out."""

    def __init__(self, argv: list[str], env: dict[str, str], config: dict, as_user: int | None, scratch: str | None):
        self._owner = os.getpid()
        self._scratch = scratch  # a host directory to remove on close, for backends without a private /tmp
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._control = ours
        try:
            self.proc = subprocess.Popen(
                [*argv, "-c", SERVER_SOURCE, json.dumps(config)],
                stdin=theirs,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,  # read only once it died: a healthy zygote writes nothing
                env=env,
                start_new_session=True,
                user=as_user,
                group=as_user,
                extra_groups=[] if as_user is not None else None,
            )
        except OSError as exc:
            ours.close()
            raise ZygoteError(f"zygote could not start: {exc}") from exc
        finally:
            theirs.close()
        if not select.select([ours], [], [], _START_S)[0] or ours.recv(1) != b"R":
            self.close()
            raise ZygoteError(f"zygote did not start: {self._last_words()}")

    @property
    def pid(self) -> int:
        """The host pid of the process that holds the namespaces (bwrap or unshare)."""
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, files: dict[str, str], script: str, stdin: str, limits: Limits) -> RunResult:
        env = clean_env("")
        del env["HOME"], env["TMPDIR"]  # the zygote points them at the run's own directory
        request = json.dumps({"files": files, "script": script, "limits": asdict(limits), "env": env}).encode()
        pipes = Pipes()
        try:
            try:
                socket.send_fds(self._control, [b"Q" + _HEADER.pack(len(request))], pipes.child_ends())
                self._control.sendall(request)
            except OSError as exc:
                raise ZygoteDied(f"zygote gone before the run: {exc}") from exc
            pipes.close(*pipes.child_ends())
            start = time.monotonic()
            stdout, stderr, timed_out, overflow = collect(pipes, stdin.encode(), limits, start, self._control.fileno())
            if timed_out or overflow:
                try:
                    self._control.send(b"K")
                except OSError:
                    pass  # dead: the report read below says so
            report = self._report()
        finally:
            pipes.close()
        seconds = time.monotonic() - start
        if "status" not in report:  # the zygote could not run it, or died (then it is closed already)
            return RunResult(None, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"),
                             timed_out, overflow, seconds, sandbox_error=report["error"])  # fmt: skip
        if "retire" in report:
            log.warning("retiring a sandbox zygote: %s", report["retire"])
            self.close()
        cpu = report["cpu"]
        return RunResult(
            returncode=os.waitstatus_to_exitcode(report["status"]),
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
            # the CPU limit's SIGXCPU/SIGKILL is recognised by the CPU time used
            timed_out=timed_out or cpu >= limits.cpu_s * 0.98,
            output_overflow=overflow,
            seconds=seconds,
            cpu_seconds=cpu,
        )

    def _report(self) -> dict:
        """The zygote's report on the run, or {"error": ...} if it died or hung (then it is stopped)."""
        deadline = time.monotonic() + _REPORT_S
        try:
            header = self._receive(_HEADER.size, deadline)
            return json.loads(self._receive(_HEADER.unpack(header)[0], deadline))
        except (ZygoteError, OSError) as exc:
            error = str(exc)
        self.close()
        log.warning("sandbox %s; it is replaced for the next run. %s", error, self._last_words())
        return {"error": error}

    def _receive(self, size: int, deadline: float) -> bytes:
        data = b""
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._control], [], [], remaining)[0]:
                raise ZygoteError("zygote did not report the end of the run in time")
            chunk = self._control.recv(size - len(data))
            if not chunk:
                raise ZygoteError("zygote died during the run")
            data += chunk
        return data

    def _last_words(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode("utf-8", "replace").strip()[-2000:]

    def close(self) -> None:
        """Stop the zygote: EOF on its socket ends it; the wrapper is killed if it lingers."""
        self._control.close()
        if os.getpid() != self._owner:  # inherited through a fork: the zygote is the parent's
            return
        try:
            self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # the wrapper's death kills the zygote (pdeathsig), the namespace with it
            self.proc.wait()
        if self._scratch:
            remove_tree(self._scratch)


class ZygotePool:
    """Zygotes for concurrent runs: each run takes an idle one or starts one. Thread-safe."""

    def __init__(self, start: Callable[[], Zygote]):
        self._start = start
        self._idle: list[Zygote] = []
        self._lock = threading.Lock()
        self._owner = os.getpid()
        self._finalizer = weakref.finalize(self, _close_all, self._idle)

    def run(self, files: dict[str, str], script: str, stdin: str, limits: Limits) -> RunResult:
        error = ""
        for attempt in range(2):
            try:
                zygote = self._take() if attempt == 0 else self._start()
            except ZygoteError as exc:
                return RunResult(None, "", "", sandbox_error=str(exc))
            try:
                return zygote.run(files, script, stdin, limits)
            except ZygoteDied as exc:
                log.warning("sandbox %s; retrying the run on a new one", exc)
                error = str(exc)
            finally:
                self._give_back(zygote)
        return RunResult(None, "", "", sandbox_error=error)

    def pids(self) -> list[int]:
        """Host pids of the idle zygotes' wrappers (for tests and diagnostics)."""
        with self._lock:
            return [zygote.pid for zygote in self._idle]

    def _take(self) -> Zygote:
        with self._lock:
            if os.getpid() != self._owner:  # a forked copy of the pool: those zygotes are the parent's
                self._idle[:] = []
                self._owner = os.getpid()
            while self._idle:
                zygote = self._idle.pop()
                if zygote.alive():
                    return zygote
                zygote.close()
        return self._start()

    def _give_back(self, zygote: Zygote) -> None:
        if not zygote.alive():
            zygote.close()
            return
        with self._lock:
            if self._finalizer.alive and os.getpid() == self._owner:
                self._idle.append(zygote)
                return
        zygote.close()

    def close(self) -> None:
        self._finalizer()


def _close_all(zygotes: list[Zygote]) -> None:
    while zygotes:
        zygotes.pop().close()
