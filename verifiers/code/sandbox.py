"""Running untrusted Python programs sandboxed.

Every run gets: its own session and process group, a fresh temporary working directory (removed
afterwards), an environment built from scratch (no HF_TOKEN or cloud keys from the parent), resource
limits (CPU, address space, processes, file size, open files), a wall-clock limit, capped stdout and
stderr, no network, and nothing it started left running once it ends.

Backends, strongest first:
- ``bwrap`` (bubblewrap): read-only root, private /tmp, /dev and /proc, new user/pid/net/ipc namespaces.
- ``unshare``: new net and pid namespaces (util-linux ``unshare``); the filesystem is the host's,
  protected only by running as an unprivileged user.

Modes:
- ``zygote`` (default): a long-lived process inside the backend's namespaces forks a child per run
  (verifiers/code/zygote.py); the namespaces and the interpreter start once, not per run.
- ``oneshot``: a fresh sandbox per run (``prlimit`` + the backend + ``python -I script``), the kernel
  killing the pid namespace when the program exits. The fallback when a zygote cannot start.

When running as root the program runs as ``nobody`` (65534): root ignores RLIMIT_NPROC, so a fork bomb
would otherwise be unbounded, and root could write anywhere. That user needs an interpreter it can
execute, so the sandbox may use the system Python rather than ``sys.executable`` (see ``_interpreter``).

``VERIFIERS_SANDBOX`` picks the backend (auto|bwrap|unshare), ``VERIFIERS_SANDBOX_MODE`` the mode
(zygote|oneshot); ``VERIFIERS_SANDBOX_NETWORK`` decides what a missing network namespace is: "require"
(default, an error) or "warn" (run anyway, logged once).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from verifiers.code.run_io import Limits, Pipes, RunResult, clean_env, collect, remove_tree
from verifiers.code.zygote import Zygote, ZygotePool

log = logging.getLogger(__name__)

NOBODY = 65534
SANDBOX_DIR = "/tmp/sandbox"  # where one-shot bwrap mounts the working directory
_TMPFS_BYTES = 1 << 30  # a zygote's private /tmp (bwrap): bounds what runs can park in memory


class SandboxUnavailable(RuntimeError):
    """No backend can give the isolation the settings require."""


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
    """Runs ``python -I <script>`` sandboxed (see the module doc). Thread-safe: runs share nothing."""

    def __init__(self, backend: str = "auto", require_network_isolation: bool = True, mode: str = "zygote"):
        if mode not in ("zygote", "oneshot"):
            raise ValueError(f"unknown sandbox mode {mode!r}; use zygote or oneshot")
        self.drop_privileges = os.geteuid() == 0
        self.python = _interpreter(self.drop_privileges)
        self.require_network_isolation = require_network_isolation
        self.mode = "oneshot"
        self._pool: ZygotePool | None = None
        self.backend = self._choose(backend)
        if mode == "zygote" and self.backend != "none":  # a zygote's protection needs its pid namespace
            self._start_pool()

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
        """None if the backend works here (one-shot), else why not."""
        saved, self.backend = getattr(self, "backend", None), backend
        try:
            return _probe_failure(self.run({"probe.py": "print('ok')"}, "probe.py", limits=Limits(wall_s=30)))
        finally:
            self.backend = saved

    def _start_pool(self) -> None:
        """Switch to zygote mode if a zygote starts and runs a program here; else stay one-shot."""
        pool = ZygotePool(self._start_zygote)
        failure = _probe_failure(pool.run({"probe.py": "print('ok')"}, "probe.py", "", Limits(wall_s=30)))
        if failure is None:
            self.mode, self._pool = "zygote", pool
            return
        pool.close()
        log.warning("sandbox zygote unavailable with %s (%s); starting a fresh sandbox per run", self.backend, failure)

    def _start_zygote(self) -> Zygote:
        python = [self.python, "-I"]
        if self.backend == "bwrap":
            argv = [
                "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--size", str(_TMPFS_BYTES), "--tmpfs", "/tmp",
                # Every namespace: their setup is paid once per zygote, not per run.
                "--unshare-all", "--unshare-user", "--disable-userns",
                # Not --die-with-parent: it ties bwrap to the *thread* that started it, and a pool
                # thread's exit would take the zygote along. The zygote ends when our socket closes.
                "--new-session", "--as-pid-1", "--", *python,
            ]  # fmt: skip
            config = {"workroot": "/tmp", "wipe": ["/tmp", "/dev/shm"]}
            # bwrap makes its namespaces unprivileged, so it is started as nobody directly.
            return Zygote(argv, clean_env("/tmp"), config, NOBODY if self.drop_privileges else None, None)
        # unshare: the host's filesystem, so the runs' directories live in a host directory of the
        # zygote's own; --mount-proc so that /proc shows only this namespace's processes.
        argv = ["unshare", "--net", "--pid", "--ipc", "--uts", "--mount", "--mount-proc", "--fork", "--kill-child"]
        if self.drop_privileges:
            argv += ["--", "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        else:
            # A user namespace gives an unprivileged user the right to make the others. Its "root" must
            # keep no capability once Python runs (an empty bounding set): with one, a program could
            # trace the zygote.
            argv += ["--user", "--map-root-user", "--", "setpriv", "--bounding-set=-all", "--inh-caps=-all"]
        scratch = tempfile.mkdtemp(prefix="verifier-zygote-")
        if self.drop_privileges:
            os.chown(scratch, NOBODY, NOBODY)
        config = {"workroot": scratch, "wipe": [scratch]}
        try:
            return Zygote([*argv, "--no-new-privs", "--", *python], clean_env(scratch), config, None, scratch)
        except BaseException:
            remove_tree(scratch)
            raise

    def zygote_pids(self) -> list[int]:
        """Host pids of the idle zygotes' wrapper processes (empty in one-shot mode)."""
        return self._pool.pids() if self._pool else []

    def close(self) -> None:
        """Stop the zygotes (they also stop on their own when this process exits)."""
        if self._pool:
            self._pool.close()

    def run(self, files: dict[str, str], script: str, stdin: str = "", limits: Limits = Limits()) -> RunResult:
        """Run ``python -I script`` sandboxed in a fresh directory holding ``files``."""
        if self._pool is not None:
            return self._pool.run(files, script, stdin, limits)
        return self._run_oneshot(files, script, stdin, limits)

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
            return argv, workdir, clean_env(SANDBOX_DIR)
        if self.backend == "unshare":
            # --kill-child plus the pid namespace: when the program exits, nothing it started survives.
            argv = ["unshare", "--net", "--pid", "--fork", "--kill-child"]
            if self.drop_privileges:
                argv += ["--", "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            else:  # a user namespace gives an unprivileged user the right to make the others
                argv += ["--user", "--map-root-user"]
            return [*argv, "--", *python], workdir, clean_env(workdir)
        return python, workdir, clean_env(workdir)

    def _run_oneshot(self, files: dict[str, str], script: str, stdin: str, limits: Limits) -> RunResult:
        workdir = tempfile.mkdtemp(prefix="verifier-sandbox-")
        pipes = Pipes()
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
                stdin=pipes.stdin_r,
                stdout=pipes.stdout_w,
                stderr=pipes.stderr_w,
                start_new_session=True,
                user=NOBODY if as_nobody else None,
                group=NOBODY if as_nobody else None,
                extra_groups=[] if as_nobody else None,
            )
            pipes.close(*pipes.child_ends())
            exit_fd = os.pidfd_open(proc.pid)  # does not reap: _kill_group's wait4 still gets the CPU time
            try:
                stdout, stderr, timed_out, overflow = collect(pipes, stdin.encode(), limits, start, exit_fd)
            finally:
                os.close(exit_fd)
                cpu_seconds = _kill_group(proc)
            # Wrappers do not report a signal death uniformly (unshare exits 1), so the CPU limit is
            # recognised by the CPU time used, which wait4 reports for the whole waited-for tree. The
            # rusage total can read a little under the limit the kernel enforced (0.997 s seen for 1 s;
            # a CI run read under 0.98), hence the margin.
            timed_out = timed_out or cpu_seconds >= limits.cpu_s * 0.9
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
            pipes.close()
            remove_tree(workdir)


def _probe_failure(result: RunResult) -> str | None:
    if result.returncode == 0 and result.stdout.strip() == "ok":
        return None
    return result.sandbox_error or (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]


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
    return cpu


@functools.lru_cache(maxsize=None)
def default_sandbox() -> Sandbox:
    """The process-wide sandbox from the environment settings, probed once."""
    network = os.environ.get("VERIFIERS_SANDBOX_NETWORK", "require")
    if network not in ("require", "warn"):
        raise ValueError(f"VERIFIERS_SANDBOX_NETWORK must be 'require' or 'warn', not {network!r}")
    return Sandbox(
        os.environ.get("VERIFIERS_SANDBOX", "auto"),
        require_network_isolation=network == "require",
        mode=os.environ.get("VERIFIERS_SANDBOX_MODE", "zygote"),
    )
