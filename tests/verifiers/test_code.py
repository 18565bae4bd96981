import pytest

from verifiers import check_code
from verifiers.code import Limits
from verifiers.code.compare import outputs_match
from verifiers.code.extract import extract_code

# Generous for programs that end by themselves (no flaky timeouts on a loaded machine); the endless
# loop case gets a short one.
LIMITS = Limits(wall_s=20, cpu_s=10)
SHORT = Limits(wall_s=1, cpu_s=1)


def fenced(code: str, lang: str = "python") -> str:
    return f"Here is my solution.\n```{lang}\n{code}\n```\n"


@pytest.mark.parametrize(
    "completion, language, source",
    [
        ("```python\nprint(1)\n```", "python", "print(1)\n"),
        ("```py\nx = 1\n```", "py", "x = 1\n"),
        ("```\nprint(2)\n```", "", "print(2)\n"),
        ("```python\nprint(1)\n```\nthen better:\n```python\nprint(3)\n```", "python", "print(3)\n"),
        ("```Python3 title=sol.py\nprint(4)\n```", "python3", "print(4)\n"),
        ("```cpp\nint main(){}\n```", "cpp", "int main(){}\n"),
        # A block written while thinking is a draft, not the submission.
        ("<think>```python\nprint('draft')\n```</think>```python\nprint('final')\n```", "python", "print('final')\n"),
    ],
)
def test_extract_code(completion, language, source):
    assert tuple(extract_code(completion)) == (language, source)


@pytest.mark.parametrize(
    "completion", ["no code here", "<think>```python\nprint(1)\n```</think>prose only", "```python\nunclosed"]
)
def test_extract_code_finds_nothing(completion):
    assert extract_code(completion) is None


@pytest.mark.parametrize(
    "got, want",
    [
        ("1 2 3\n", "1 2 3"),
        ("1  2\t3  \n\n\n", "1 2 3\n"),
        ("a\r\nb\r\n", "a\nb"),
        ("0.3333333", "0.33333333333"),
        ("1e-9", "0.0"),
        ("3.0", "3.000000"),
    ],
)
def test_outputs_match(got, want):
    assert outputs_match(got, want)


@pytest.mark.parametrize(
    "got, want",
    [
        ("1 2", "1 2 3"),
        ("1\n2", "1 2"),
        ("0.34", "0.3333333"),
        ("1000000000000000001", "1000000000000000000"),  # integers exactly, not as floats
        ("3.0", "3"),
        ("YES", "yes"),
        ("nan", "0.5"),
        ("", "0"),
    ],
)
def test_outputs_differ(got, want):
    assert not outputs_match(got, want)


ADD_STDIO = {"kind": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6"}]}


@pytest.mark.parametrize(
    "code, passed, reason, score",
    [
        ("a, b = map(int, input().split())\nprint(a + b)", True, "ok", 1.0),
        ("a, b = map(int, input().split())\nprint(a - b if a == 10 else a + b)", False, "wrong_output", 0.5),
        ("print(3)", False, "wrong_output", 0.5),
        ("raise SystemExit(1)", False, "runtime_error", 0.0),
        ("import nonexistent_module", False, "runtime_error", 0.0),
        ("x = [0] * (1 << 40)", False, "memory_limit", 0.0),
    ],
)
def test_stdio(code, passed, reason, score):
    verdict = check_code(fenced(code), ADD_STDIO, limits=LIMITS)
    assert (verdict.passed, verdict.reason, verdict.score) == (passed, reason, score)


SQUARE_ASSERT = {
    "kind": "assert",
    "code": "def check(candidate):\n    assert candidate(3) == 9\n    assert candidate(-2) == 4\n",
    "entry_point": "square",
}


@pytest.mark.parametrize(
    "code, passed, reason",
    [
        ("def square(x):\n    return x * x", True, "ok"),
        ("def square(x):\n    return x * 3", False, "failed_tests"),
        ("def squared(x):\n    return x * x", False, "runtime_error"),  # wrong name
        ("import sys\nsys.exit(0)\ndef square(x):\n    return 0", False, "exited_early"),
        ("import os\nos._exit(0)", False, "exited_early"),
        ("def square(x):\n    while True:\n        pass", False, "timeout"),
    ],
)
def test_assert(code, passed, reason):
    verdict = check_code(fenced(code), SQUARE_ASSERT, limits=SHORT if reason == "timeout" else LIMITS)
    assert (verdict.passed, verdict.reason) == (passed, reason)


def test_assert_pass_cannot_be_forged_from_what_the_program_can_read():
    # Prints the last token that looks like a pass marker in every file, argument, environment and
    # input it can read, then exits 0 before check() runs.
    code = (
        "import os, re, sys\n"
        "texts = [open(name, encoding='latin-1').read() for name in os.listdir('.')]\n"
        "texts += [open(p, 'rb').read().decode('latin-1') for p in ('/proc/self/cmdline', '/proc/self/environ')]\n"
        "texts.append(sys.stdin.read())\n"
        "tokens = re.findall(r'all-tests-passed-[0-9a-f]+|[0-9a-f]{16,}', ' '.join(texts))\n"
        "print(tokens[-1] if tokens else 'nothing found')\n"
        "sys.stdout.flush()\n"
        "os._exit(0)"
    )
    verdict = check_code(fenced(code), SQUARE_ASSERT, limits=LIMITS)
    assert (verdict.passed, verdict.reason) == (False, "exited_early")


@pytest.mark.parametrize(
    "completion, tests, passed, reason",
    [
        ("no code", ADD_STDIO, False, "no_code"),
        (fenced("int main() { return 0; }", "cpp"), ADD_STDIO, False, "unsupported_language"),
        (fenced("print(1)"), None, None, "no_tests"),
        (fenced("print(1)"), {}, None, "no_tests"),
        (fenced("print(1)"), {"kind": "junit"}, None, "bad_test_spec"),
        (fenced("print(1)"), {"kind": "stdio", "cases": []}, None, "bad_test_spec"),
        (fenced("print(1)"), {"kind": "stdio", "cases": [{"input": ""}]}, None, "bad_test_spec"),
        (fenced("print(1)"), {"kind": "assert", "code": "def check(c): pass"}, None, "bad_test_spec"),
    ],
)
def test_cannot_run(completion, tests, passed, reason):
    verdict = check_code(completion, tests)
    assert (verdict.passed, verdict.reason) == (passed, reason)


def test_extracted_is_the_program():
    assert check_code(fenced("print(3)"), ADD_STDIO).extracted == "print(3)\n"


def test_missing_network_isolation_is_an_error_unless_set_to_warn(monkeypatch, caplog):
    from verifiers.code import sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)  # neither bwrap nor unshare
    with pytest.raises(sandbox_module.SandboxUnavailable, match="VERIFIERS_SANDBOX_NETWORK=warn"):
        sandbox_module.Sandbox()
    relaxed = sandbox_module.Sandbox(require_network_isolation=False)
    assert relaxed.backend == "none"
    assert "WITH network access" in caplog.text
    verdict = check_code(fenced("print(input())"), {"kind": "stdio", "cases": [{"input": "7", "output": "7"}]},
                         sandbox=relaxed)  # fmt: skip
    assert verdict.passed is True


def test_sandbox_settings_from_environment(monkeypatch):
    from verifiers.code import sandbox as sandbox_module

    monkeypatch.setenv("VERIFIERS_SANDBOX_NETWORK", "sometimes")
    sandbox_module.default_sandbox.cache_clear()
    try:
        with pytest.raises(ValueError, match="VERIFIERS_SANDBOX_NETWORK"):
            sandbox_module.default_sandbox()
    finally:
        sandbox_module.default_sandbox.cache_clear()
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        sandbox_module.Sandbox("docker")
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        sandbox_module.Sandbox(mode="vfork")


def test_falls_back_to_a_fresh_sandbox_per_run_when_no_zygote_starts(monkeypatch, caplog):
    from verifiers.code import sandbox as sandbox_module
    from verifiers.code import zygote

    monkeypatch.setattr(zygote, "SERVER_SOURCE", "import sys; sys.exit('no zygote here')")
    sandbox = sandbox_module.Sandbox()
    assert sandbox.mode == "oneshot"
    assert "no zygote here" in caplog.text
    verdict = check_code(fenced("print(input())"), {"kind": "stdio", "cases": [{"input": "7", "output": "7"}]},
                         sandbox=sandbox)  # fmt: skip
    assert verdict.passed is True
