"""The OpenAI-compatible teacher backend: `vllm serve`, SGLang, `factory serve-teacher` or a hosted API.

Planned sample rows go out as async requests (the `openai` client) under a concurrency limit and
token-bucket limits on requests and tokens per minute; trace rows come back in batches as requests
finish, shaped exactly like the vLLM path's (records.TRACE_SCHEMA), and generate.py writes each batch
as a part file, so resume by trace_key works the same.

Endpoints (`teacher.api.endpoint`):
- `chat` (default): the system/user messages of prompts.chat_messages. It is the one endpoint every
  server and hosted API has, and R1-family chat templates open the think block themselves. A
  separately returned `reasoning_content` (DeepSeek's API, vLLM's reasoning parsers) is put back as
  `<think>...</think>`; otherwise, in reasoning mode, the completion starts with the reasoning prefix
  that the server's template put in the prompt, as the vLLM path stores it.
- `completions`: the prompt rendered locally exactly as the vLLM path renders it, so the reasoning
  prefix is forced whatever the server's template does. Needs the teacher's tokenizer locally.

Retries are ours, not the client's (its max_retries is 0), so that every attempt passes the rate
limiter: 408/409/429/5xx, timeouts and connection errors back off exponentially with jitter, or for
as long as the server's Retry-After says. A request that still fails becomes a row with `error` set.
401/403/404 (wrong key, no access, wrong model or URL) would fail every row alike, so they stop the
run with a clear message instead of filling the run with error rows.

The API key is read from the environment variable `teacher.api.api_key_env` when the run starts; it is
held only by the client and scrubbed from every error message we store or raise.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import queue
import random
import threading
import time
from typing import Iterator

from factory.config import PipelineConfig, TeacherConfig
from factory.errors import FactoryError
from factory.records import TRACE_SCHEMA
from factory.teacher.prompts import chat_messages, reasoning_prefix, render_prompt, source_teachers
from verifiers import split_think

RETRYABLE_STATUS = {408, 409, 429}
FATAL_STATUS = {401: "the API key was refused", 403: "access denied", 404: "no such model or endpoint"}
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
RETRY_AFTER_MAX_S = 600.0
# Finished rows wait at most this long for their batch to fill before they are written, so a slow API
# does not hold finished work in memory (a kill loses at most one batch or this many seconds of it).
FLUSH_S = 30.0
_DONE = object()


class ApiError(FactoryError):
    """The server refused the run as a whole (key, access, model name)."""


class TokenBucket:
    """`per_minute` units per minute, refilled continuously; holds at most one second's worth.

    A small bucket spreads requests evenly, as hosted APIs enforce their limits over short windows.
    A request larger than the bucket waits for a full bucket and leaves it in debt, so a large
    max_tokens slows the rate instead of blocking forever. `settle` returns what a request reserved
    but did not use (tokens are reserved as prompt + max_tokens, then corrected by the reported usage).
    """

    def __init__(self, per_minute: float, clock=time.monotonic, sleep=asyncio.sleep):
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.level = self.capacity
        self._clock, self._sleep = clock, sleep
        self._last = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:  # first come, first served
            need = min(amount, self.capacity)
            self._refill()
            while self.level < need:
                await self._sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def settle(self, reserved: float, used: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + reserved - used)


def retry_delay(attempt: int, headers=None) -> float:
    """Seconds before retry number `attempt` (0-based): the server's Retry-After if given, else
    exponential backoff (1, 2, 4, ... s, at most 60) times a random 0.5-1 so that workers spread out."""
    after = _retry_after(headers) if headers is not None else None
    if after is not None:
        return min(after, RETRY_AFTER_MAX_S) * random.uniform(1.0, 1.1)  # spread the herd a little
    return random.uniform(0.5, 1.0) * min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)


def _retry_after(headers) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # the other form: an HTTP date
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class _Scrubber:
    """Removes the API key from any text we keep. Holds the key without ever showing it in a repr."""

    def __init__(self, key: str | None):
        self._key = key

    def __call__(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and len(self._key) >= 4 else text

    def __repr__(self) -> str:
        return "_Scrubber(***)"


def _assemble(text: str, reasoning: str | None, prefix: str, forced: bool = False) -> str:
    """The completion as the vLLM path stores it: `<think>` reasoning `</think>` answer."""
    if reasoning:
        if not text.strip():  # cut off while reasoning: the block stays open, as the engine would leave it
            return f"<think>\n{reasoning.strip()}"
        return f"<think>\n{reasoning.strip()}\n</think>\n\n{text.lstrip()}"
    if forced or (prefix and not text.lstrip().startswith(prefix.strip())):
        return prefix + text
    return text


def preflight(cfg: PipelineConfig) -> None:
    """Before any work: the server answers, takes the key and serves the model (when it lists models)."""
    import httpx

    api = cfg.teacher.api
    if api.endpoint == "completions":  # the prompt is rendered here, with the teacher's tokenizer
        from factory.teacher.model import check_model

        check_model(cfg.teacher.model, cfg.teacher.revision)
    key = os.environ.get(api.api_key_env)
    scrub = _Scrubber(key)
    url = api.base_url.rstrip("/") + "/models"
    try:
        resp = httpx.get(url, headers={"Authorization": f"Bearer {key or 'EMPTY'}"}, timeout=min(api.timeout_s, 30))
    except httpx.HTTPError as e:
        raise ApiError(
            f"teacher.api.base_url: cannot reach {api.base_url} ({type(e).__name__}: {scrub(str(e))}); "
            f"start a server (factory serve-teacher PIPELINE.yaml) or fix the URL"
        ) from None
    if resp.status_code in (401, 403):
        raise ApiError(f"{api.base_url} refused the API key read from ${api.api_key_env} (HTTP {resp.status_code})")
    if resp.status_code != 200:
        return  # not every server lists its models; the requests themselves will tell
    try:
        served = [m["id"] for m in resp.json().get("data", [])]
    except (ValueError, AttributeError, KeyError, TypeError):
        return
    model = api.model_name or cfg.teacher.model
    if served and model not in served:
        raise ApiError(f"{api.base_url} does not serve {model!r} (it serves {served}); set teacher.api.model_name")


class _Client:
    def __init__(self, cfg: PipelineConfig):
        from openai import AsyncOpenAI

        api = cfg.teacher.api
        key = os.environ.get(api.api_key_env)
        self.scrub = _Scrubber(key)
        # Local servers (vllm serve without --api-key) accept any key; the client insists on one.
        self.client = AsyncOpenAI(base_url=api.base_url, api_key=key or "EMPTY", max_retries=0, timeout=api.timeout_s)
        self.api = api
        self.model = api.model_name or cfg.teacher.model
        self.teachers = source_teachers(cfg)
        self.default = cfg.teacher
        self.requests = TokenBucket(api.requests_per_minute) if api.requests_per_minute else None
        self.tokens = TokenBucket(api.tokens_per_minute) if api.tokens_per_minute else None

    def teacher_for(self, row: dict) -> TeacherConfig:
        return self.teachers.get(row.get("source"), self.default)

    async def trace(self, row: dict) -> dict:
        teacher = self.teacher_for(row)
        sampling = teacher.sampling
        params = {"model": self.model, "n": 1, "temperature": sampling.temperature, "top_p": sampling.top_p,
                  "max_tokens": sampling.max_tokens}
        out = {f.name: row.get(f.name) for f in TRACE_SCHEMA}
        out.update(mode=teacher.mode, finish_reason="error", prompt_tokens=0, completion_tokens=0)
        try:
            if self.api.endpoint == "chat":
                messages = chat_messages(teacher, row["problem"])
                out["prompt"] = json.dumps(messages, ensure_ascii=False)
                call = lambda: self.client.chat.completions.create(messages=messages, **params)  # noqa: E731
            else:
                out["prompt"] = render_prompt(teacher, row["problem"])
                call = lambda: self.client.completions.create(prompt=out["prompt"], **params)  # noqa: E731
        except Exception as e:  # template errors come in many types; the vLLM path records them the same way
            return {**out, "error": f"prompt: {type(e).__name__}: {e}"[:2000]}
        reserved = len(out["prompt"]) / 3 + sampling.max_tokens  # ~3+ characters a token; settled by usage
        try:
            resp = await self._with_retries(call, reserved)
        except _RowFailed as e:
            return {**out, "error": self.scrub(str(e))[:2000]}
        try:
            choice = resp.choices[0]
            if self.api.endpoint == "chat":
                msg = choice.message
                # DeepSeek and older vLLM call it reasoning_content; newer vLLM, reasoning.
                reasoning = getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
                completion = _assemble(msg.content or "", reasoning, reasoning_prefix(teacher))
            else:
                completion = _assemble(choice.text or "", None, reasoning_prefix(teacher), forced=True)
        except (AttributeError, IndexError, TypeError) as e:  # a malformed answer spoils this row only
            return {**out, "error": self.scrub(f"response: {type(e).__name__}: {e}")[:2000]}
        usage = resp.usage
        out["reasoning"], out["response"] = split_think(completion)
        out.update(
            completion=completion,
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )
        return out

    async def _with_retries(self, call, reserved: float):
        import openai

        for attempt in range(self.api.max_retries + 1):
            if self.requests:
                await self.requests.acquire()
            if self.tokens:
                await self.tokens.acquire(reserved)
            headers = None
            try:
                resp = await call()
            except openai.APIStatusError as e:
                status = e.status_code
                if status in FATAL_STATUS:
                    raise ApiError(
                        f"{self.api.base_url} answered {status} ({FATAL_STATUS[status]}) for model {self.model!r}: "
                        f"{self.scrub(e.message)[:500]}. The key is read from ${self.api.api_key_env}."
                    ) from None
                failure, headers = f"HTTP {status}: {e.message}", e.response.headers
                retryable = status in RETRYABLE_STATUS or status >= 500
            except openai.APIConnectionError as e:  # includes timeouts
                failure, retryable = f"{type(e).__name__}: {e}", True
            else:
                if self.tokens:
                    self.tokens.settle(reserved, resp.usage.total_tokens if resp.usage else reserved)
                return resp
            if self.tokens:
                self.tokens.settle(reserved, 0)  # a failed request used none of its reservation
            if not retryable:
                raise _RowFailed(failure)  # the server refused this row (a 400: too long, bad request)
            if attempt == self.api.max_retries:
                raise _RowFailed(f"{failure} (after {attempt + 1} attempts)")
            await asyncio.sleep(retry_delay(attempt, headers))

    async def close(self) -> None:
        await self.client.close()


class _RowFailed(Exception):
    pass


async def _produce(cfg: PipelineConfig, rows: list[dict], out: queue.Queue, stop: threading.Event) -> None:
    client = _Client(cfg)
    pending = iter(rows)

    async def worker() -> None:
        for row in pending:  # one shared iterator: at most `concurrency` requests in flight
            if stop.is_set():
                return
            out.put(await client.trace(row))

    try:
        async with asyncio.TaskGroup() as group:  # a fatal ApiError cancels the other workers
            for _ in range(min(cfg.teacher.api.concurrency, len(rows))):
                group.create_task(worker())
    finally:
        await client.close()


def generate_batches(cfg: PipelineConfig, rows: list[dict], batch_size: int | None = None) -> Iterator[list[dict]]:
    """Trace rows for planned sample rows, a batch at a time as requests finish (any order).

    The requests run on an event loop in a background thread, so they keep going while the caller
    writes a batch. Closing the iterator early stops new requests.
    """
    batch_size = batch_size or cfg.teacher.batch_size
    out: queue.Queue = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            asyncio.run(_produce(cfg, rows, out, stop))
            out.put(_DONE)
        except BaseException as e:  # handed to the caller's thread
            out.put(e.exceptions[0] if isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1 else e)

    thread = threading.Thread(target=run, name="openai-teacher", daemon=True)
    thread.start()
    batch: list[dict] = []
    try:
        while True:
            try:
                item = out.get(timeout=FLUSH_S)
            except queue.Empty:
                if batch:
                    yield batch
                    batch = []
                continue
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                if batch:
                    yield batch  # finished rows are kept even when the run stops
                raise item
            batch.append(item)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        stop.set()
