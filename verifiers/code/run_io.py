"""What one sandboxed run takes and gives (limits, result) and how its output is collected.

Shared by both ways of running a program: one-shot (verifiers.code.sandbox) and zygote
(verifiers.code.zygote).
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import subprocess
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

_READ_CHUNK = 65536
_DRAIN_S = 0.5  # after the program ended, how long its output pipes may take to reach EOF


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024  # RLIMIT_AS
    # RLIMIT_NPROC counts threads too, and all processes of the sandbox user: concurrent sandboxes share it.
    max_processes: int = 64
    max_file_mb: int = 16  # RLIMIT_FSIZE
    max_open_files: int = 64
    max_output_bytes: int = 1 << 20  # per stream; more gets the run killed


@dataclass(frozen=True)
class RunResult:
    returncode: int | None  # negative: killed by that signal
    stdout: str
    stderr: str
    timed_out: bool = False  # wall clock or CPU limit
    output_overflow: bool = False
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    sandbox_error: str | None = None  # the sandbox itself failed during the run (the program's fault or not)


def clean_env(home: str) -> dict[str, str]:
    """A run's whole environment: nothing of the parent's (no HF_TOKEN, no cloud keys)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # BLAS pools would spend the process limit on threads.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def remove_tree(path: str) -> None:
    """Remove a directory a program wrote into, whatever it left there (a mode of 000, a tree too deep
    for shutil.rmtree's recursion): GNU chmod and rm walk any tree."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except (OSError, RecursionError):
        pass
    subprocess.run(["chmod", "-R", "u+rwx", path], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", path], capture_output=True)
    if os.path.exists(path):
        log.warning("could not remove the sandbox directory %s", path)


class Pipes:
    """The run's stdin, stdout and stderr pipes; each end is closed once, whoever closes it first."""

    def __init__(self):
        self.stdin_r, self.stdin_w = os.pipe()
        self.stdout_r, self.stdout_w = os.pipe()
        self.stderr_r, self.stderr_w = os.pipe()
        self._open = {self.stdin_r, self.stdin_w, self.stdout_r, self.stdout_w, self.stderr_r, self.stderr_w}

    def child_ends(self) -> list[int]:
        return [self.stdin_r, self.stdout_w, self.stderr_w]

    def close(self, *fds: int) -> None:
        for fd in fds or list(self._open):
            if fd in self._open:
                self._open.discard(fd)
                os.close(fd)


def collect(pipes: Pipes, stdin: bytes, limits: Limits, start: float, done_fd: int) -> tuple[bytes, bytes, bool, bool]:
    """Feed stdin and collect capped output until ``done_fd`` is readable (the program ended) and the
    output pipes reach EOF, or the wall clock or output cap is hit; the caller then ends the run.

    Returns (stdout, stderr, timed_out, output_overflow).
    """
    out = {pipes.stdout_r: bytearray(), pipes.stderr_r: bytearray()}
    deadline = start + limits.wall_s
    with selectors.DefaultSelector() as selector:
        selector.register(done_fd, selectors.EVENT_READ)
        for fd in out:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        pending = memoryview(stdin)
        if pending:
            os.set_blocking(pipes.stdin_w, False)
            selector.register(pipes.stdin_w, selectors.EVENT_WRITE)
        else:
            pipes.close(pipes.stdin_w)
        done = False
        while not done or any(key.fd in out for key in selector.get_map().values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # After the end only a leftover process can hold the pipes open: not a timeout.
                return bytes(out[pipes.stdout_r]), bytes(out[pipes.stderr_r]), not done, False
            for key, _ in selector.select(remaining):
                if key.fd == done_fd:
                    done = True
                    selector.unregister(done_fd)
                    deadline = min(deadline, time.monotonic() + _DRAIN_S)
                elif key.fd == pipes.stdin_w:
                    try:
                        pending = pending[os.write(pipes.stdin_w, pending[:_READ_CHUNK]) :]
                    except BrokenPipeError:  # the program stopped reading: fine
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(pipes.stdin_w)
                        pipes.close(pipes.stdin_w)
                else:
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if not chunk:
                        selector.unregister(key.fd)
                        continue
                    buffer = out[key.fd]
                    buffer += chunk
                    if len(buffer) > limits.max_output_bytes:
                        del buffer[limits.max_output_bytes :]
                        return bytes(out[pipes.stdout_r]), bytes(out[pipes.stderr_r]), False, True
    return bytes(out[pipes.stdout_r]), bytes(out[pipes.stderr_r]), False, False
