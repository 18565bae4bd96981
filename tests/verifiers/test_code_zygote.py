"""Hostile programs aimed at the pre-forked sandbox itself: the zygote must survive them untouched, and
nothing one run does may change how a later run is judged. Run against every backend installed here."""

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from verifiers import check_code
from verifiers.code import Limits, Sandbox, SandboxUnavailable

LIMITS = Limits(wall_s=10, cpu_s=5, memory_mb=256)
EXPECT_42 = {"kind": "stdio", "cases": [{"input": "", "output": "42"}]}


@pytest.fixture(params=["bwrap", "unshare"])
def sandbox(request):
    try:
        sandbox = Sandbox(request.param, mode="zygote")
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))
    assert (sandbox.backend, sandbox.mode) == (request.param, "zygote")
    yield sandbox
    sandbox.close()


def check(code: str, sandbox: Sandbox, tests=EXPECT_42):
    return check_code(f"```python\n{code}\n```", tests, limits=LIMITS, sandbox=sandbox)


def only_zygote(sandbox: Sandbox) -> int:
    (pid,) = sandbox.zygote_pids()
    return pid


def zygote_state(wrapper: int) -> str:
    """The zygote's scheduler state (R, S, T for stopped, ...), from the host."""
    (zygote,) = Path(f"/proc/{wrapper}/task/{wrapper}/children").read_text().split()
    return Path(f"/proc/{zygote}/stat").read_text().rsplit(")", 1)[1].split()[0]


def assert_judges_correctly(sandbox: Sandbox):
    assert check("print(6 * 7)", sandbox).passed is True
    assert check("print(41)", sandbox).reason == "wrong_output"


def test_signals_cannot_kill_or_stop_the_zygote(sandbox):
    check("print(42)", sandbox)
    wrapper = only_zygote(sandbox)
    code = (
        "import os, signal\n"
        "for sig in (signal.SIGSTOP, signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGSEGV):\n"
        "    for pid in (1, os.getppid(), -1):\n"
        "        try:\n"
        "            os.kill(pid, sig)\n"
        "        except OSError:\n"
        "            pass\n"
        "print(42)"
    )
    check(code, sandbox)
    assert only_zygote(sandbox) == wrapper  # the same zygote, not a restarted one
    assert zygote_state(wrapper) != "T"
    assert_judges_correctly(sandbox)


def test_the_zygote_control_socket_and_memory_are_out_of_reach(sandbox):
    code = (
        "import ctypes, os\n"
        "reached = []\n"
        "for path in ('/proc/1/fd/0', '/proc/1/mem', '/proc/1/environ'):\n"
        "    try:\n"
        "        open(path, 'rb').close()\n"
        "        reached.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "try:\n"
        "    reached.append(os.listdir('/proc/1/fd'))\n"
        "except OSError:\n"
        "    pass\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.ptrace(16, 1, 0, 0) == 0:  # PTRACE_ATTACH\n"
        "    reached.append('ptrace')\n"
        "print(reached or 42)"
    )
    assert check(code, sandbox).passed is True  # prints 42 only when every attempt failed
    assert_judges_correctly(sandbox)


def test_a_process_left_behind_cannot_touch_the_next_run(sandbox):
    # The leftover kills every process it sees and plants files where the next run might look (not in
    # the host's /tmp, which the unshare backend shares).
    scratch = ["/tmp", "/dev/shm"] if sandbox.backend == "bwrap" else []
    code = (
        "import os, signal, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        while True:\n"
        "            for pid in os.listdir('/proc'):\n"
        "                if pid.isdigit() and int(pid) not in (1, os.getpid()):\n"
        "                    try:\n"
        "                        os.kill(int(pid), signal.SIGKILL)\n"
        "                    except OSError:\n"
        "                        pass\n"
        f"            for where in {scratch} + [os.path.dirname(os.getcwd())]:\n"
        "                try:\n"
        "                    open(os.path.join(where, 'planted'), 'w').write('42')\n"
        "                except OSError:\n"
        "                    pass\n"
        "            time.sleep(0.01)\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        "print(42)"
    )
    check(code, sandbox)
    survey = (
        "import os, time\n"
        "time.sleep(0.3)  # long enough for a surviving leftover to strike\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        f"places = {scratch} + [os.path.dirname(os.getcwd())]\n"
        "planted = [d for d in places if os.path.exists(os.path.join(d, 'planted'))]\n"
        "print(42 if pids == [1, os.getpid()] and not planted else (pids, planted))"
    )
    verdict = check(survey, sandbox)
    assert (verdict.passed, verdict.reason) == (True, "ok")


def test_shared_memory_does_not_carry_over(sandbox):
    # System V segments and queues outlive their processes; so do POSIX segments, which are files in
    # /dev/shm (the host's own under unshare, so planted there only under bwrap).
    shm = "/dev/shm/planted" if sandbox.backend == "bwrap" else "planted"
    libc = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    sysv = "libc.shmget(4242, 4096, {flags}) >= 0 and libc.msgget(4243, {flags}) >= 0"
    plant = libc + f"open({shm!r}, 'w').write('42')\nprint(42 if {sysv.format(flags='0o1600')} else 0)"
    assert check(plant, sandbox).passed is True  # 0o1600: IPC_CREAT, mode 600
    survey = libc + f"print(0 if {sysv.format(flags=0)} or os.path.exists({shm!r}) else 42)"
    assert check(survey, sandbox).passed is True


def test_interpreter_changes_do_not_carry_over(sandbox):
    # Had any of these changes reached the next run, the programs after it would print something else.
    tamper = (
        "import builtins, json, sys\n"
        "json.dumps = lambda *args, **kwargs: '42'\n"
        "builtins.abs = lambda x: 42\n"
        "sys.modules['math'] = type(sys)('math')\n"
        "sys.modules['math'].floor = lambda x: 42\n"
        "sys.setrecursionlimit(30)\n"
        "open('json.py', 'w').write('dumps = lambda *a, **k: \"42\"')\n"
        "sys.path.insert(0, '.')\n"
        "print(42)"
    )
    assert check(tamper, sandbox).passed is True
    plain = "import json, math\nprint(json.dumps(0), abs(-1), math.floor(2.5))"
    verdict = check(plain, sandbox, {"kind": "stdio", "cases": [{"input": "", "output": "0 1 2"}]})
    assert (verdict.passed, verdict.reason) == (True, "ok")
    deep = "def f(n):\n    return 0 if n == 0 else 1 + f(n - 1)\nprint(f(100) - 58)"
    assert check(deep, sandbox).passed is True


def test_a_dead_zygote_is_replaced_and_the_run_retried(sandbox):
    check("print(42)", sandbox)
    first = only_zygote(sandbox)
    os.kill(first, signal.SIGKILL)  # its wrapper: the kernel takes the zygote and its namespace down
    time.sleep(0.2)
    assert check("print(42)", sandbox).passed is True  # the program had not started: retried
    assert only_zygote(sandbox) != first


def test_a_zygote_dying_during_a_run_fails_that_run(sandbox):
    check("print(42)", sandbox)
    wrapper = only_zygote(sandbox)
    threading.Timer(0.5, os.kill, (wrapper, signal.SIGKILL)).start()
    verdict = check("import time\ntime.sleep(3)\nprint(42)", sandbox)
    assert (verdict.passed, verdict.reason) == (False, "sandbox_error")
    assert_judges_correctly(sandbox)


def test_a_zygote_outlives_the_thread_that_started_it(sandbox):
    def slow(_):
        return check("import time\ntime.sleep(0.3)\nprint(42)", sandbox)

    with ThreadPoolExecutor(2) as executor:  # the second zygote starts in a pool thread, which then ends
        assert [v.passed for v in executor.map(slow, range(2))] == [True, True]
    time.sleep(0.5)
    wrappers = sandbox.zygote_pids()
    assert len(wrappers) == 2 and all(Path(f"/proc/{pid}").exists() for pid in wrappers)
    assert [v.passed for v in map(slow, range(2))] == [True, True]
    assert sorted(sandbox.zygote_pids()) == sorted(wrappers)


def test_concurrent_runs_do_not_mix(sandbox):
    def one(i: int):
        tests = {"kind": "stdio", "cases": [{"input": f"{i}\n", "output": f"{i * i}"}]}
        return check("import time\nx = int(input())\ntime.sleep(0.05)\nprint(x * x)", sandbox, tests)

    with ThreadPoolExecutor(4) as executor:
        verdicts = list(executor.map(one, range(12)))
    assert [v.reason for v in verdicts] == ["ok"] * 12
    assert 1 < len(sandbox.zygote_pids()) <= 4  # one zygote per concurrent run, reused


def test_a_scratch_space_it_cannot_empty_retires_the_zygote(sandbox, caplog):
    check("print(42)", sandbox)
    first = only_zygote(sandbox)
    deep = "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\nos.chmod('.', 0)\nprint(42)"
    assert check(deep, sandbox).passed is True  # the run itself is judged as usual
    assert "retiring a sandbox zygote" in caplog.text
    assert_judges_correctly(sandbox)
    assert only_zygote(sandbox) != first
