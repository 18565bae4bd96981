"""Running untrusted Python programs: one fresh sandbox per run.

Every run gets: its own session and process group (killed whole at the end), a temporary working
directory (removed afterwards), an environment built from scratch (no HF_TOKEN or cloud keys from the
parent), resource limits (CPU, address space, processes, file size, open files; set by util-linux
``prlimit``), a wall-clock limit, capped stdout/stderr, and no network.

Backends, strongest first:
- ``bwrap`` (bubblewrap): read-only root, private /tmp, /dev and /proc, new user/pid/net/ipc namespaces;
  the kernel kills everything in the pid namespace when the program exits.
- ``unshare``: new net and pid namespaces (util-linux ``unshare``), same kill-on-exit; the filesystem
  is the host's, protected only by running as an unprivileged user.

When running as root the program runs as ``nobody`` (65534): root ignores RLIMIT_NPROC, so a fork bomb
would otherwise be unbounded, and root could write anywhere. That user needs an interpreter it can
execute, so the sandbox may use the system Python rather than ``sys.executable`` (see ``_interpreter``).

``VERIFIERS_SANDBOX`` picks the backend (auto|bwrap|unshare); ``VERIFIERS_SANDBOX_NETWORK`` decides what a
missing network namespace is: "require" (default, an error) or "warn" (run anyway, logged once).
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

NOBODY = 65534
SANDBOX_DIR = "/tmp/sandbox"  # where bwrap mounts the working directory
_READ_CHUNK = 65536
_DRAIN_S = 0.5  # after the program exits, how long its output pipes may take to reach EOF


class SandboxUnavailable(RuntimeError):
    """No backend can give the isolation the settings require."""


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


def _limit_argv(limits: Limits) -> list[str]:
    """util-linux prlimit sets the limits and execs the rest; they are inherited by all it starts.

    Not a preexec_fn: running Python between fork and exec can deadlock when other threads hold locks
    (Ray actors are multi-threaded), and without one subprocess can use the faster vfork path.
    """
    mb = 1024 * 1024
    return [
        "prlimit",
        f"--cpu={limits.cpu_s}",
        f"--as={limits.memory_mb * mb}",
        f"--nproc={limits.max_processes}",
        f"--fsize={limits.max_file_mb * mb}",
        f"--nofile={limits.max_open_files}",
        "--core=0",
        "--",
    ]


def _clean_env(home: str) -> dict[str, str]:
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


def _world_executable(path: str) -> bool:
    """Whether an unprivileged user can run this interpreter (every directory above it traversable)."""
    real = os.path.realpath(path)
    if not os.stat(real).st_mode & 0o001:
        return False
    parent = os.path.dirname(real)
    while parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            return False
        parent = os.path.dirname(parent)
    return True


def _interpreter(drop_privileges: bool) -> str:
    configured = os.environ.get("VERIFIERS_SANDBOX_PYTHON")
    if configured:
        return configured
    if not drop_privileges or _world_executable(sys.executable):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and _world_executable(candidate):
            return candidate
    raise SandboxUnavailable(
        f"{sys.executable} is not executable by uid {NOBODY} and no system python3 is; "
        "set VERIFIERS_SANDBOX_PYTHON to an interpreter every user can run"
    )


class Sandbox:
    """Runs ``python -I <script>`` in a fresh sandbox. Thread-safe: runs share nothing."""

    def __init__(self, backend: str = "auto", require_network_isolation: bool = True):
        self.drop_privileges = os.geteuid() == 0
        self.python = _interpreter(self.drop_privileges)
        self.require_network_isolation = require_network_isolation
        self.backend = self._choose(backend)

    def _choose(self, wanted: str) -> str:
        if wanted not in ("auto", "bwrap", "unshare"):
            raise ValueError(f"unknown sandbox backend {wanted!r}; use auto, bwrap or unshare")
        candidates = ["bwrap", "unshare"] if wanted == "auto" else [wanted]
        failures = []
        for name in candidates:
            if shutil.which(name) is None:
                failures.append(f"{name}: not installed")
                continue
            probe = self._probe(name)
            if probe is None:
                return name
            failures.append(f"{name}: {probe}")
        message = "no sandbox backend gives a network namespace here (" + "; ".join(failures) + ")"
        if self.require_network_isolation:
            raise SandboxUnavailable(
                message + ". Install bubblewrap, run as root, or set VERIFIERS_SANDBOX_NETWORK=warn"
            )
        log.warning("%s; running model code with resource limits only, WITH network access", message)
        return "none"

    def _probe(self, backend: str) -> str | None:
        """None if the backend works here, else why not."""
        saved, self.backend = getattr(self, "backend", None), backend
        try:
            result = self.run({"probe.py": "print('ok')"}, "probe.py", limits=Limits(wall_s=30))
        finally:
            self.backend = saved
        if result.returncode == 0 and result.stdout.strip() == "ok":
            return None
        return (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]

    def _command(self, script: str, workdir: str) -> tuple[list[str], str, dict]:
        python = [self.python, "-I", script]
        if self.backend == "bwrap":
            argv = [
                "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                "--bind", workdir, SANDBOX_DIR, "--chdir", SANDBOX_DIR,
                # Not --unshare-all: its cgroup and uts namespaces add little here (an unprivileged
                # user cannot change the host's hostname anyway) and made each run ~10 ms slower.
                "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
                "--die-with-parent", "--new-session",
                # The program is pid 1 of its namespace: when it exits the kernel kills all it started.
                # Without this bwrap's own init is left a zombie for the host's init to reap, and
                # zombies of uid nobody count against RLIMIT_NPROC.
                "--as-pid-1", "--", *python,
            ]  # fmt: skip
            return argv, workdir, _clean_env(SANDBOX_DIR)
        if self.backend == "unshare":
            # --kill-child plus the pid namespace: when the program exits, nothing it started survives.
            argv = ["unshare", "--net", "--pid", "--fork", "--kill-child"]
            if self.drop_privileges:
                argv += ["--", "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            else:  # a user namespace gives an unprivileged user the right to make the others
                argv += ["--user", "--map-root-user"]
            return [*argv, "--", *python], workdir, _clean_env(workdir)
        return python, workdir, _clean_env(workdir)

    def run(self, files: dict[str, str], script: str, stdin: str = "", limits: Limits = Limits()) -> RunResult:
        """Write ``files`` into a fresh directory and run ``python -I script`` there."""
        workdir = tempfile.mkdtemp(prefix="verifier-sandbox-")
        try:
            for name, text in files.items():
                with open(os.path.join(workdir, name), "w", encoding="utf-8") as handle:
                    handle.write(text)
            if self.drop_privileges:
                for path in (workdir, *(os.path.join(workdir, name) for name in files)):
                    os.chown(path, NOBODY, NOBODY)
            argv, cwd, env = self._command(script, workdir)
            argv = _limit_argv(limits) + argv
            # bwrap makes its own namespaces unprivileged, so it is started as nobody directly; unshare
            # needs root to create them and drops to nobody itself (setpriv).
            as_nobody = self.drop_privileges and self.backend in ("bwrap", "none")
            start = time.monotonic()
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                user=NOBODY if as_nobody else None,
                group=NOBODY if as_nobody else None,
                extra_groups=[] if as_nobody else None,
            )
            try:
                stdout, stderr, timed_out, overflow = _communicate(proc, stdin.encode(), limits, start)
            finally:
                cpu_seconds = _kill_group(proc)
            # Wrappers do not report a signal death uniformly (unshare exits 1), so the CPU limit is
            # recognised by the CPU time used, which wait4 reports for the whole waited-for tree.
            timed_out = timed_out or cpu_seconds >= limits.cpu_s * 0.98
            returncode = proc.returncode
            if self.backend != "none" and returncode is not None and 128 < returncode <= 128 + 64:
                returncode = 128 - returncode  # the wrapper reports a signal death as 128+N, like a shell
            return RunResult(
                returncode=returncode,
                stdout=stdout.decode("utf-8", "replace"),
                stderr=stderr.decode("utf-8", "replace"),
                timed_out=timed_out,
                output_overflow=overflow,
                seconds=time.monotonic() - start,
                cpu_seconds=cpu_seconds,
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _communicate(proc: subprocess.Popen, stdin: bytes, limits: Limits, start: float) -> tuple[bytes, bytes, bool, bool]:
    """Feed stdin, collect capped output until the program exits; the caller kills the group.

    Returns (stdout, stderr, timed_out, output_overflow). The exit is watched through a pidfd, which
    does not reap: _kill_group's wait4 still collects the run's CPU time.
    """
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    deadline = start + limits.wall_s
    exit_fd = os.pidfd_open(proc.pid)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(exit_fd, selectors.EVENT_READ)
            for stream in buffers:
                os.set_blocking(stream.fileno(), False)
                selector.register(stream, selectors.EVENT_READ)
            pending = memoryview(stdin)
            if pending:
                os.set_blocking(proc.stdin.fileno(), False)
                selector.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
            exited = False
            while not exited or any(key.fileobj in buffers for key in selector.get_map().values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # After the exit only a leftover process can hold the pipes open: not a timeout.
                    return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), not exited, False
                for key, _ in selector.select(remaining):
                    if key.fileobj == exit_fd:
                        exited = True
                        selector.unregister(exit_fd)
                        deadline = min(deadline, time.monotonic() + _DRAIN_S)
                    elif key.fileobj is proc.stdin:
                        try:
                            pending = pending[os.write(proc.stdin.fileno(), pending[:_READ_CHUNK]) :]
                        except BrokenPipeError:  # the program stopped reading: fine
                            pending = pending[:0]
                        if not pending:
                            selector.unregister(proc.stdin)
                            proc.stdin.close()
                    else:
                        chunk = os.read(key.fileobj.fileno(), _READ_CHUNK)
                        if not chunk:
                            selector.unregister(key.fileobj)
                            continue
                        buffer = buffers[key.fileobj]
                        buffer += chunk
                        if len(buffer) > limits.max_output_bytes:
                            del buffer[limits.max_output_bytes :]
                            return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), False, True
    finally:
        os.close(exit_fd)
    return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), False, False


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def _exited(pid: int) -> bool:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(proc: subprocess.Popen) -> float:
    """Kill the whole process group, reap the leader; returns the CPU seconds the run used.

    Inside out: the wrapper's child is pid 1 of the sandbox's pid namespace, and killing it makes the
    kernel kill everything in the namespace; the wrapper then reaps it and exits. Killing the wrapper
    first would orphan that child to the host's init, whose reaping can lag, and an unreaped zombie
    of the sandbox user still counts against the next run's RLIMIT_NPROC.
    """
    if proc.returncode is None and not _exited(proc.pid):
        for child in _children(proc.pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 1.0
        while not _exited(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # pgid == pid: start_new_session made it the group leader
    except (ProcessLookupError, PermissionError):
        pass
    cpu = 0.0
    if proc.returncode is None:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream and not stream.closed:
            stream.close()
    return cpu


@functools.lru_cache(maxsize=None)
def default_sandbox() -> Sandbox:
    """The process-wide sandbox from the environment settings, probed once."""
    network = os.environ.get("VERIFIERS_SANDBOX_NETWORK", "require")
    if network not in ("require", "warn"):
        raise ValueError(f"VERIFIERS_SANDBOX_NETWORK must be 'require' or 'warn', not {network!r}")
    return Sandbox(os.environ.get("VERIFIERS_SANDBOX", "auto"), require_network_isolation=network == "require")
