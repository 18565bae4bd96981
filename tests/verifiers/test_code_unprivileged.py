"""The code sandbox when the project runs as an ordinary user, as CI may: from a root run, the checks
run as an unprivileged uid with the system interpreter (the code verifier needs only the standard
library), against every backend and mode. When the suite itself runs unprivileged, the other code
tests cover this directly."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import verifiers

UID = 4242  # no account needed; not the sandbox user of a root run (65534)
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs root (to switch users) and a system python3"
)

# Runs as the unprivileged user: each case through every backend and mode; the test asserts the verdicts.
SCRIPT = r"""
import json, os, sys, time
from verifiers.code import Limits, Sandbox, SandboxUnavailable, check_code

EXPECT_42 = {"kind": "stdio", "cases": [{"input": "", "output": "42"}]}
SHORT = Limits(wall_s=1.5, cpu_s=1, memory_mb=256)
LIMITS = Limits(wall_s=10, cpu_s=5, memory_mb=256)
CASES = {
    "correct": ("print(6 * 7)", LIMITS),
    "wrong": ("print(41)", LIMITS),
    "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", SHORT),
    "memory_bomb": ("b = []\nwhile True:\n    b.append(bytearray(50 << 20))", LIMITS),
    "read_env": ("import os\nprint(42 if 'HF_TOKEN' in os.environ else 0)", LIMITS),
    "socket": ("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\nprint(42)", LIMITS),
    "write_outside": (f"open({sys.argv[1]!r} + '/pwned', 'w').write('x')\nprint(42)", LIMITS),
    "kill_zygote": ("import os, signal\nfor s in (signal.SIGKILL, signal.SIGSTOP):\n    os.kill(1, s)\n"
                    "    os.kill(os.getppid(), s)\nprint(41)", LIMITS),
    "leftover": ("import os, subprocess\nif os.fork() == 0:\n    os.setsid()\n"
                 "    subprocess.Popen(['sleep', '314.1592'], start_new_session=True)\n"
                 "    os._exit(0)\nprint(41)", LIMITS),
    "correct_after": ("print(6 * 7)", LIMITS),
}


def mine():
    return sum(1 for p in os.listdir("/proc") if p.isdigit() and os.path.exists(f"/proc/{p}")
               and os.stat(f"/proc/{p}").st_uid == os.getuid())


def settle(baseline):
    # A one-shot run's namespace dies after the run returns; until its processes are gone they count
    # against the next run's process limit (the zygote reaps them before it reports).
    deadline = time.monotonic() + 15
    while mine() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)


results = {}
for backend in ("bwrap", "unshare"):
    for mode in ("zygote", "oneshot"):
        try:
            sandbox = Sandbox(backend, mode=mode)
        except SandboxUnavailable as exc:
            results[f"{backend}/{mode}"] = str(exc)
            continue
        key = f"{backend}/{sandbox.mode}"
        results[key] = {}
        for name, (code, limits) in CASES.items():
            baseline = mine()
            verdict = check_code(f"```python\n{code}\n```", EXPECT_42, limits=limits, sandbox=sandbox)
            results[key][name] = [verdict.passed, verdict.reason]
            settle(baseline)
        time.sleep(0.2)
        results[key]["leftover_running"] = any(
            b"314.1592" in open(f"/proc/{p}/cmdline", "rb").read() for p in os.listdir("/proc") if p.isdigit()
            and int(p) != os.getpid() and os.path.exists(f"/proc/{p}/cmdline"))
        sandbox.close()
print(json.dumps(results))
"""


def test_sandbox_as_an_unprivileged_user():
    root = Path(tempfile.mkdtemp(prefix="verifiers-unprivileged-"))
    try:
        # A stand-in `verifiers` package whose path leads to the real one: its own __init__ would
        # import math-verify and the rest, which the system interpreter does not have.
        (root / "verifiers").mkdir()
        (root / "verifiers" / "__init__.py").write_text(f"__path__.append({str(Path(verifiers.__file__).parent)!r})\n")
        outside = root / "outside"
        outside.mkdir()
        os.chown(outside, UID, UID)  # writable by the user, so only the sandbox can stop the write
        root.chmod(0o755)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HF_TOKEN": "hf_FAKE0123456789"}
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", SCRIPT, str(outside)], env=env, cwd=root, capture_output=True, text=True,
            user=UID, group=UID, extra_groups=[], timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        results = json.loads(done.stdout)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=1), file=sys.stderr)
    if shutil.which("bwrap"):
        assert isinstance(results["bwrap/zygote"], dict) and isinstance(results["bwrap/oneshot"], dict), results
    for key, verdicts in results.items():
        if isinstance(verdicts, str):  # that backend is unavailable to an unprivileged user here
            continue
        assert verdicts["correct"] == verdicts["correct_after"] == [True, "ok"], key
        assert verdicts["wrong"] == verdicts["leftover"] == [False, "wrong_output"], key
        # one-shot: the program is pid 1 itself, and may kill itself
        assert verdicts["kill_zygote"] in ([False, "wrong_output"], [False, "killed"]), key
        assert verdicts["fork_bomb"][1] in {"timeout", "killed"}, key
        assert verdicts["memory_bomb"] == [False, "memory_limit"], key
        assert verdicts["read_env"] == [False, "wrong_output"], key
        assert verdicts["socket"] == [False, "runtime_error"], key
        assert verdicts["leftover_running"] is False, key
        if key.startswith("bwrap"):  # unshare leaves the filesystem to the user's own permissions
            assert verdicts["write_outside"] == [False, "runtime_error"], key
