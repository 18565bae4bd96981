"""The zygote: a long-lived Python inside the sandbox's namespaces that forks one child per run.

Not imported by the project: verifiers.code.zygote starts it as ``python -I -c <this file> <config>``
inside bubblewrap or unshare, as pid 1 of a new pid namespace, as the unprivileged sandbox user, with
the system interpreter. Standard library only.

Why the candidate cannot reach it:
- pid 1 of a pid namespace gets a signal from inside the namespace only if it handles that signal,
  and this one handles none (SIGINT ignored), so a program can neither kill nor stop it;
- it is non-dumpable (prctl), so a process of the same user can neither ptrace it nor open its
  /proc/1/fd (the control socket) or /proc/1/mem;
- each run is a fork: what the program changes in the interpreter (modules, builtins, sys) is its own
  copy-on-write copy, and the next run forks from the untouched zygote;
- after each run every process left in the namespace is killed and reaped, its System V IPC objects
  removed and the scratch directories emptied, before the report goes back: nothing of one run is
  there for the next (except a POSIX message queue, which cannot be listed without mounting mqueue).

Why a fork runs the program itself rather than exec'ing a fresh interpreter: starting Python costs
~10 ms, a fork of this idle process well under one. The child shares the zygote's hash seed and
whatever the zygote imported; it never holds another run's expected output (compared on the host).

Protocol on fd 0, a Unix stream socket to the host (one run at a time):
- zygote -> host: b"R" once ready.
- host -> zygote: b"Q" + 4-byte length + JSON {"files", "script", "limits", "env"}, the run's stdin
  read end, stdout and stderr write ends attached to the b"Q" (SCM_RIGHTS).
- host -> zygote: b"K": kill the run now (wall-clock limit or output cap); ignored between runs.
- zygote -> host: 4-byte length + JSON {"status": wait status, "cpu": seconds} or {"error": why}.
"""

import ctypes
import functools
import json
import os
import resource
import selectors
import signal
import socket
import stat
import struct
import sys
import tempfile

HEADER = struct.Struct("!I")
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option, value):
    if _libc().prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def _recv_exact(control, size):
    data = bytearray()
    while len(data) < size:
        chunk = control.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _receive(control):
    """The next request and its three pipe ends; stray kill requests from a finished run are skipped."""
    while True:
        kind, fds, _, _ = socket.recv_fds(control, 1, 3)
        if not kind:
            raise EOFError
        if kind == b"Q":
            (length,) = HEADER.unpack(_recv_exact(control, HEADER.size))
            return json.loads(_recv_exact(control, length)), fds
        for fd in fds:
            os.close(fd)


def _send(control, message):
    data = json.dumps(message).encode()
    control.sendall(HEADER.pack(len(data)) + data)


def _kill_everything():
    """Kill and reap every process in the namespace but this one (kill(-1) from pid 1 reaches them all)."""
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _remove_ipc_objects():
    """Remove the System V shared memory, queues and semaphores a run made: they outlive processes, and
    the IPC namespace is the zygote's, shared by its runs. (POSIX shared memory lives in /dev/shm.)"""
    libc = _libc()
    ipc_rmid = 0
    for kind, remove in (
        ("shm", lambda ident: libc.shmctl(ident, ipc_rmid, None)),
        ("msg", lambda ident: libc.msgctl(ident, ipc_rmid, None)),
        ("sem", lambda ident: libc.semctl(ident, 0, ipc_rmid)),
    ):
        with open(f"/proc/sysvipc/{kind}") as table:
            for row in table.read().splitlines()[1:]:
                if remove(int(row.split()[1])) != 0:
                    raise OSError(ctypes.get_errno(), f"could not remove System V {kind} {row.split()[1]}")


def _empty(path):
    """Remove everything under ``path``, whatever permissions the program left on it."""
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            os.chmod(entry.path, stat.S_IRWXU)
            _empty(entry.path)
            os.rmdir(entry.path)
        else:
            os.unlink(entry.path)


def _supervise(control, pid):
    """Wait for the run's child to exit, or kill it on the host's word; returns (wait status, CPU s)."""
    pidfd = os.pidfd_open(pid)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(pidfd, selectors.EVENT_READ)
            selector.register(control, selectors.EVENT_READ)
            while not any(key.fileobj == pidfd for key, _ in selector.select()):
                if control.recv(1) in (b"K", b""):  # b"": the host is gone
                    os.kill(-1, signal.SIGKILL)
    finally:
        os.close(pidfd)
    _, status, usage = os.wait4(pid, 0)
    return status, usage.ru_utime + usage.ru_stime


def _serve(control, config):
    """Run requests until the host closes the socket. Returns only in a forked child: its run."""
    while True:
        try:
            request, fds = _receive(control)
        except EOFError:
            sys.exit(0)
        try:
            workdir = tempfile.mkdtemp(dir=config["workroot"])
            for name, text in request["files"].items():
                with open(os.path.join(workdir, name), "w", encoding="utf-8") as handle:
                    handle.write(text)
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            _send(control, {"error": f"zygote could not prepare the run: {exc}"})
            continue
        if pid == 0:
            control.detach()  # the child closes fd 0 itself; the object must not close a reused fd later
            return request, fds, workdir
        for fd in fds:
            os.close(fd)
        status, cpu = _supervise(control, pid)
        _kill_everything()
        try:
            _remove_ipc_objects()
            for path in config["wipe"]:
                _empty(path)
        except (OSError, RecursionError) as exc:  # the next run would not start clean: retire
            _send(control, {"status": status, "cpu": cpu, "retire": f"could not clean up after the run: {exc}"})
            sys.exit(1)
        _send(control, {"status": status, "cpu": cpu})


def _become_program(request, fds, workdir):
    """In the forked child: a fresh session, directory, environment, limits and stdio, then the script."""
    import builtins
    import types

    os.setsid()
    _prctl(PR_SET_DUMPABLE, 1)  # an ordinary process again (its own /proc/self readable); it is not the zygote
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(workdir)
    os.umask(0o022)
    os.environ.clear()
    os.environ.update(request["env"], HOME=workdir, TMPDIR=workdir)
    for signum in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    # What a freshly started interpreter has.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = request["limits"]
    mb = 1024 * 1024
    for name, value in (
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_AS", limits["memory_mb"] * mb),
        ("RLIMIT_NPROC", limits["max_processes"]),
        ("RLIMIT_FSIZE", limits["max_file_mb"] * mb),
        ("RLIMIT_NOFILE", limits["max_open_files"]),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
    script = request["script"]
    sys.argv = [script]
    main = types.ModuleType("__main__")
    main.__file__, main.__builtins__ = script, builtins
    sys.modules["__main__"] = main
    with open(script, "rb") as handle:
        code = compile(handle.read(), script, "exec")
    return code, main.__dict__


def _start():
    config = json.loads(sys.argv[1])
    control = socket.socket(fileno=0)
    # Die with the wrapper that holds the namespaces: the host stops a hung zygote by killing that
    # (setpriv's change of user cleared unshare's own --kill-child setting).
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a handled signal would reach pid 1 from inside
    control.sendall(b"R")
    return _serve(control, config)


def _exit_status(exc):
    """Python's exit status for an uncaught SystemExit."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _end(status, _exit=os._exit):
    """What the interpreter does when a script ends (join threads, atexit, flush), then exit without
    tearing down every object: that touches, so copies, the heap shared with the zygote (~8 ms a run).
    ``_exit`` is bound before the program runs: replacing ``os._exit`` must not let it exit 0."""
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException:
        sys.excepthook(*sys.exc_info())
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            status = status or 120  # what Python exits with when its final flush fails
    _exit(status)


if __name__ == "__main__":
    _code, _namespace = _become_program(*_start())
    try:
        exec(_code, _namespace)
        _status = 0
    except SystemExit as _exc:
        _status = _exit_status(_exc)
    except BaseException:
        _type, _value, _tb = sys.exc_info()
        sys.excepthook(_type, _value.with_traceback(_tb.tb_next), _tb.tb_next)  # as Python prints it
        _status = 1
    _end(_status)
