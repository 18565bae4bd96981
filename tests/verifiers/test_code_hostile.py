"""Hostile programs: each must fail its check within the limits, leave the host unharmed and leave
nothing running. Run against every sandbox backend installed here, in both modes (zygote, one-shot)."""

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from verifiers import check_code
from verifiers.code import Limits, Sandbox, SandboxUnavailable
from verifiers.code.sandbox import NOBODY
from verifiers.code.zygote import SERVER_SOURCE

ZYGOTE_MARK = SERVER_SOURCE.splitlines()[0].encode()  # a zygote's command line holds its source

# Programs expected to stop on their own get a generous wall limit (no flaky timeouts on a loaded
# machine); the ones that never stop get a short one.
LIMITS = Limits(wall_s=10, cpu_s=5, memory_mb=256, max_output_bytes=1 << 16)
SHORT = Limits(wall_s=1.5, cpu_s=1, memory_mb=256)
SLACK_S = 3  # sandbox start and teardown on a loaded 2-core machine
EXPECT_42 = {"kind": "stdio", "cases": [{"input": "", "output": "42"}]}


@pytest.fixture(params=["bwrap", "unshare"])
def backend(request):
    return request.param


@pytest.fixture(params=["zygote", "oneshot"])
def sandbox(request, backend):
    try:
        sandbox = Sandbox(backend, mode=request.param)
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))
    assert (sandbox.backend, sandbox.mode) == (backend, request.param)
    yield sandbox
    assert_nothing_left_running(sandbox)
    wrappers = sandbox.zygote_pids()
    sandbox.close()
    assert [pid for pid in wrappers if Path(f"/proc/{pid}").exists()] == []  # closing stops the zygotes


def sandbox_processes() -> dict[int, tuple[int, str]]:
    """Processes running as the sandbox user (only meaningful when we run as root): pid -> (ppid, name)."""
    found = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) == NOBODY:
            found[int(status.parent.name)] = (int(fields["PPid"]), fields["Name"].strip())
    return found


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def is_zygote(pid: int) -> bool:
    try:
        return ZYGOTE_MARK in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def strays() -> dict[int, str]:
    """Sandbox-user processes outside every zygote's tree (a zygote, its wrapper and its runs). Other
    processes on the machine may use the sandbox too: their zygotes are left alone here."""
    processes = sandbox_processes()
    zygotes = {pid for pid in processes if is_zygote(pid)}
    wrappers = {ppid for pid, (ppid, _) in processes.items() if pid in zygotes}

    def in_zygote_tree(pid: int) -> bool:
        while pid in processes:
            if pid in zygotes or pid in wrappers:
                return True
            pid = processes[pid][0]
        return False

    return {pid: name for pid, (_, name) in processes.items() if not in_zygote_tree(pid)}


def assert_nothing_left_running(*sandboxes: Sandbox):
    """Our zygotes have no process left, and no sandbox-user process outside a zygote persists
    (checked only when we run as root; a one-shot run of someone else's may come and go meanwhile)."""
    if os.geteuid() != 0:
        return
    for sandbox in sandboxes:
        for wrapper in sandbox.zygote_pids():
            (zygote,) = children(wrapper)
            assert children(zygote) == [], "a run left a process in its zygote's namespace"
    first = strays()
    deadline = time.monotonic() + 10  # a killed fork bomb's processes take a while to go on a loaded machine
    while set(first) & set(strays()) and time.monotonic() < deadline:
        time.sleep(0.05)
    persistent = {pid: name for pid, name in strays().items() if pid in first}
    assert persistent == {}


def run(code: str, sandbox, limits=LIMITS):
    start = time.monotonic()
    verdict = check_code(f"```python\n{code}\n```", EXPECT_42, limits=limits, sandbox=sandbox)
    elapsed = time.monotonic() - start
    assert verdict.passed is False, verdict
    assert elapsed < limits.wall_s + SLACK_S
    return verdict


def test_fork_bomb(sandbox):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    assert run(code, sandbox, SHORT).reason in {"timeout", "killed"}
    assert os.system("true") == 0  # the host can still start processes


def test_memory_bomb(sandbox):
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))"
    assert run(code, sandbox).reason == "memory_limit"


def test_endless_loop(sandbox):
    assert run("while True:\n    pass", sandbox, SHORT).reason in {"timeout", "killed"}


def test_sleeping_past_the_limit(sandbox):
    assert run("import time\ntime.sleep(600)\nprint(42)", sandbox, SHORT).reason == "timeout"


def test_writing_outside_its_directory(sandbox, tmp_path):
    target = tmp_path / "pwned.txt"
    code = f"open({str(target)!r}, 'w').write('pwned')\nprint(42)"
    assert run(code, sandbox).reason == "runtime_error"
    assert not target.exists()


def test_reading_parent_environment(sandbox, monkeypatch):
    token = "hf_FAKE0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", token)
    code = (
        "import os, glob\n"
        "found = [os.environ.get('HF_TOKEN', '')]\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        found.append(open(path, 'rb').read().decode('latin-1'))\n"
        "    except OSError:\n"
        "        pass\n"
        f"print(42 if any({token!r} in text for text in found) else 0)"
    )
    assert run(code, sandbox).reason == "wrong_output"


def test_opening_a_socket(sandbox):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')\n"
            "socket.create_connection(('1.1.1.1', 80), timeout=1)\n"
            "print(42)"
        )
        assert run(code, sandbox).reason == "runtime_error"
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # the kernel queued no connection for us to accept
            server.accept()


def test_signalling_its_parent(sandbox):
    hits = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: hits.append(1))
    try:
        code = (
            "import os, signal\n"
            f"for pid in {{os.getppid(), {os.getpid()}}}:\n"
            "    try:\n"
            "        os.kill(pid, signal.SIGUSR1)\n"
            "    except OSError:\n"
            "        pass\n"
            "os.killpg(0, signal.SIGKILL)"
        )
        run(code, sandbox)
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert hits == []


def test_flooding_stdout(sandbox):
    assert run("while True:\n    print('x' * 10000)", sandbox).reason == "output_limit"


def test_leaving_a_child_behind(sandbox):
    marker = "313.1415"  # a sleep nobody else runs
    code = (
        "import os, subprocess\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    subprocess.Popen(['sleep', {marker!r}], start_new_session=True)\n"
        "    os._exit(0)\n"
        "print(41)"
    )
    assert run(code, sandbox).reason == "wrong_output"
    time.sleep(0.2)
    leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline") if marker.encode() in _read(p)]
    assert leftovers == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_a_well_behaved_program_still_passes(sandbox):
    verdict = check_code("```python\nprint(6 * 7)\n```", EXPECT_42, limits=LIMITS, sandbox=sandbox)
    assert verdict.passed is True
