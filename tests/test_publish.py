"""`factory publish`: the folder check, the dry run, and the upload path against a FAKE Hub.

The Hub's network cannot be reached here, so `FakeHub` below is a small HTTP server on loopback that
implements just the endpoints huggingface_hub calls to publish a dataset: create repo, create branch,
validate the card's YAML (loosely), list the tree, preupload (it answers "regular" for every file, so
contents travel base64 inside the commit; the real Hub would send Parquet through Xet storage), commit,
and revision info. It keeps the files per branch, so tests compare what arrived byte for byte, and it
can answer 429/5xx first to check that the upload retries. Everything else (huggingface_hub, the CLI,
the shards) is real.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow.parquet as pq
import pytest
import yaml

from factory.publish import check_folder
from tests.test_shard_layout import build_dataset, math_cot_verified

TOKEN = "hf_fakeTOKENvalue1234567890"


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """A FAKE Hugging Face Hub on 127.0.0.1: only what create_repo/upload_folder need (see module doc)."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "branches": {name: {path: bytes}}}
        self.commits: list[dict] = []
        self.validated: list[dict] = []  # bodies sent to /api/validate-yaml
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self.fail: dict[str, list[int]] = {}  # request kind -> statuses to answer first, one per request
        self.echo_auth_on_401 = False  # a careless server that echoes the credentials it got
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["branches"][branch]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                auth = self.headers.get("Authorization")
                body = self._body() if method == "POST" else b""
                with hub.lock:
                    hub.requests.append((method, url.path, auth))
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                kind = "create" if parts[:3] == ["api", "repos", "create"] else (parts[4] if len(parts) > 4 else "?")
                if auth != f"Bearer {hub.token}":
                    detail = f"Invalid credentials in Authorization header: {auth}" if hub.echo_auth_on_401 else "Invalid credentials"
                    return self._reply(401, {"error": detail})
                with hub.lock:
                    failures = hub.fail.get(kind) or []
                    if failures:
                        return self._reply(failures.pop(0), {"error": "fake: try again"}, {"Retry-After": "0"})
                    if kind == "create":
                        return self._create(json.loads(body))
                    if parts[:2] == ["api", "validate-yaml"]:
                        return self._validate_yaml(json.loads(body))
                    repo_id = "/".join(parts[2:4])
                    repo = hub.repos.get(repo_id)
                    if repo is None:
                        return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    rev = "/".join(parts[5:]) if kind != "tree" else parts[5]
                    if kind == "branch":
                        if rev in repo["branches"]:
                            return self._reply(409, {"error": "branch exists"})
                        repo["branches"][rev] = dict(repo["branches"]["main"])
                        return self._reply(200, {})
                    if rev not in repo["branches"]:
                        return self._reply(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                    files = repo["branches"][rev]
                    if kind == "preupload":
                        return self._reply(200, {"files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                             **({"oid": git_blob_oid(files[f["path"]])} if f["path"] in files else {})}
                            for f in json.loads(body)["files"]
                        ]})
                    if kind == "commit":
                        return self._commit(repo_id, rev, files, body)
                    if kind == "tree":
                        return self._reply(200, [
                            {"type": "file", "path": p, "size": len(c), "oid": git_blob_oid(c)} for p, c in sorted(files.items())
                        ])
                    if kind == "revision":
                        return self._reply(200, {"id": repo_id, "sha": repo["head"], "private": repo["private"],
                                                 "siblings": [{"rfilename": p} for p in sorted(files)]})
                    return self._reply(404, {"error": f"fake hub: no endpoint {method} {url.path}"})

            def _validate_yaml(self, payload: dict) -> None:
                """The real Hub checks every metadata field; the fake only that the header is a
                mapping with a license, and records what it was sent."""
                hub.validated.append(payload)
                header = yaml.safe_load(payload["content"].split("---\n")[1])
                if not isinstance(header, dict) or not header.get("license"):
                    return self._reply(400, {"errors": [{"message": "fake hub: no license"}]})
                return self._reply(200, {"warnings": []})

            def _create(self, payload: dict) -> None:
                repo_id = f"{payload['organization']}/{payload['name']}"
                url = f"{hub.url}/datasets/{repo_id}"
                if repo_id in hub.repos:
                    return self._reply(409, {"error": "You already created this dataset repo", "url": url})
                hub.repos[repo_id] = {"private": payload.get("visibility") == "private", "type": payload.get("type"),
                                      "branches": {"main": {}}, "head": "0" * 40}
                return self._reply(200, {"url": url, "name": repo_id})

            def _commit(self, repo_id: str, rev: str, files: dict, body: bytes) -> None:
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                header = next(item["value"] for item in lines if item["key"] == "header")
                for item in lines:
                    value = item["value"]
                    if item["key"] == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] == "deletedFile":
                        files.pop(value["path"], None)
                    elif item["key"] != "header":
                        return self._reply(400, {"error": f"fake hub: unsupported commit item {item['key']}"})
                oid = hashlib.sha1(body).hexdigest()
                hub.repos[repo_id]["head"] = oid
                hub.commits.append({"repo_id": repo_id, "revision": rev, "summary": header["summary"],
                                    "paths": [i["value"]["path"] for i in lines if i["key"] != "header"]})
                return self._reply(200, {"commitUrl": f"{hub.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

        return Handler


@pytest.fixture
def fake_hub():
    hub = FakeHub()
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def dataset_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("publish") / "run"
    build_dataset(run_dir, math_cot_verified(), splits={"train": 0.9, "test": 0.1}, max_rows_per_shard=200)
    return run_dir


def local_files(folder: Path) -> dict[str, bytes]:
    """What should reach the Hub: the folder less the run's stage marker."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "_SUCCESS"}


def factory(*args: str, env: dict) -> subprocess.CompletedProcess:
    """The real CLI in its own process, so everything it prints (logs included) is captured."""
    code = "import sys; from factory.cli import main; sys.argv[0] = 'factory'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


def hub_env(tmp_path: Path, endpoint: str, token: str | None = TOKEN) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update({"HF_HOME": str(tmp_path / "hf_home"), "HF_ENDPOINT": endpoint, "HF_DEBUG": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1"})
    if token:
        env["HF_TOKEN"] = token
    return env


def test_dry_run_checks_and_lists_without_token_or_network(dataset_run, tmp_path):
    # No token, and an endpoint where nothing listens: a dry run must need neither.
    result = factory("publish", str(dataset_run), "--repo-id", "org/ds", "--dry-run",
                     env=hub_env(tmp_path, "http://127.0.0.1:9", token=None))
    assert result.returncode == 0, result.stderr
    assert "the folder checks out; would upload to org/ds@main (public)" in result.stderr
    for path in local_files(dataset_run / "dataset"):
        assert path in result.stderr
    assert "publish" not in json.loads((dataset_run / "stats.json").read_text())


def test_check_names_every_problem_in_a_broken_folder(dataset_run, tmp_path):
    good = tmp_path / "good"
    shutil.copytree(dataset_run / "dataset", good)
    assert check_folder(good).errors == []

    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    shards = sorted((broken / "data").glob("train-*.parquet"))
    assert len(shards) >= 3
    shards[1].unlink()  # a missing shard
    shards[2].write_bytes(shards[2].read_bytes()[:200])  # a truncated shard
    pq.write_table(pq.read_table(shards[0]), broken / "data" / "old.parquet")  # a file no config names
    (broken / "plots" / "pass_rates.png").unlink()
    errors = "\n".join(check_folder(broken).errors)
    assert "split 'train': shards [0, 2, 3] are not 0..n-1 of n" in errors
    assert f"data/{shards[2].name}: cannot be read as Parquet" in errors
    assert "data/old.parquet: a Parquet file no config names" in errors
    assert "differ from the card's dataset_info" in errors
    assert "README.md shows plots/pass_rates.png, which is not in the folder" in errors

    card = (good / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    del header["license"]
    (good / "README.md").write_text("---\n" + yaml.safe_dump(header) + "---\n" + card.split("---\n", 2)[2])
    assert check_folder(good).errors == ["README.md header lacks ['license']"]
    result = factory("publish", str(good), "--repo-id", "org/ds", "--dry-run", env=hub_env(tmp_path, "http://127.0.0.1:9"))
    assert result.returncode == 2 and "not ready to publish" in result.stderr and "lacks ['license']" in result.stderr


def test_upload_retries_rate_limits_resumes_and_never_shows_the_token(dataset_run, tmp_path, fake_hub):
    fake_hub.fail = {"create": [429], "preupload": [429], "commit": [503]}
    env = hub_env(tmp_path, fake_hub.url)
    result = factory("publish", str(dataset_run), "--repo-id", "org/ds", "--private", env=env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert TOKEN not in output
    assert "HTTP 429" in output  # create_repo's retry (ours) and the client's own backoff both show
    assert fake_hub.fail == {"create": [], "preupload": [], "commit": []}  # each failure was met, then retried

    local = local_files(dataset_run / "dataset")
    assert fake_hub.files("org/ds") == local  # every file arrived, byte for byte
    assert fake_hub.repos["org/ds"]["private"] and fake_hub.repos["org/ds"]["type"] == "dataset"
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in fake_hub.requests)
    entry = json.loads((dataset_run / "stats.json").read_text())["publish"]
    assert entry["repo_id"] == "org/ds" and entry["commit"] and entry["files"] == len(local)

    assert fake_hub.validated[0]["repoType"] == "dataset"  # the client has the Hub check the card first
    assert fake_hub.validated[0]["content"] == local["README.md"].decode()

    # The same command again: the Hub already has every file, so nothing is committed.
    commits = len(fake_hub.commits)
    again = factory("publish", str(dataset_run), "--repo-id", "org/ds", "--private", env=env)
    assert again.returncode == 0, again.stderr
    assert len(fake_hub.commits) == commits


def test_republish_removes_stale_shards(tmp_path, fake_hub):
    rows = math_cot_verified()
    run_dir = tmp_path / "run"
    build_dataset(run_dir, rows, max_rows_per_shard=100)
    env = hub_env(tmp_path, fake_hub.url)
    assert factory("publish", str(run_dir), "--repo-id", "org/ds", env=env).returncode == 0
    assert sum(p.startswith("data/train-") for p in fake_hub.files("org/ds")) > 1

    build_dataset(run_dir, rows, max_rows_per_shard=50_000)  # now a single shard
    result = factory("publish", str(run_dir), "--repo-id", "org/ds", env=env)
    assert result.returncode == 0, result.stderr
    assert fake_hub.files("org/ds") == local_files(run_dir / "dataset")
    assert [p for p in fake_hub.files("org/ds") if p.startswith("data/")] == ["data/train-00000-of-00001.parquet"]


def test_publish_to_a_branch(dataset_run, tmp_path, fake_hub):
    result = factory("publish", str(dataset_run / "dataset"), "--repo-id", "org/ds", "--revision", "v1",
                     env=hub_env(tmp_path, fake_hub.url))
    assert result.returncode == 0, result.stderr
    assert fake_hub.files("org/ds", "v1") == local_files(dataset_run / "dataset")
    assert fake_hub.files("org/ds", "main") == {}
    assert {c["revision"] for c in fake_hub.commits} == {"v1"}


def test_errors_are_scrubbed_of_the_token(dataset_run, tmp_path, fake_hub):
    fake_hub.token = "a-different-token"  # ours is refused, and the fake echoes what it got
    fake_hub.echo_auth_on_401 = True
    result = factory("publish", str(dataset_run), "--repo-id", "org/ds", env=hub_env(tmp_path, fake_hub.url))
    assert result.returncode == 2
    assert "publish to org/ds failed" in result.stderr and "Bearer ***" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_missing_token_is_a_clear_error(dataset_run, tmp_path, fake_hub):
    result = factory("publish", str(dataset_run), "--repo-id", "org/ds", env=hub_env(tmp_path, fake_hub.url, token=None))
    assert result.returncode == 2 and "no Hugging Face token" in result.stderr
    assert fake_hub.requests == []


def test_pipeline_publish_stage_runs_once(tmp_path, fake_hub, monkeypatch):
    from factory.config import load_config
    from factory.pipeline import publish_stage, shard_stage
    from factory.storage import RunDir

    run_dir = tmp_path / "run"
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    cfg = load_config(None, ["stages=[shard,publish]", "publish.repo_id=org/piped", "publish.private=true"], str(run_dir))
    messages: list[str] = []
    shard_stage(cfg, RunDir(str(run_dir)), messages.append, math_cot_verified())
    publish_stage(cfg, RunDir(str(run_dir)), messages.append)
    assert (run_dir / "dataset" / "_SUCCESS").exists()
    assert fake_hub.files("org/piped") == local_files(run_dir / "dataset")  # the marker stays home
    publish_stage(cfg, RunDir(str(run_dir)), messages.append)
    assert messages[-1] == "publish: already published to org/piped"
    assert len(fake_hub.commits) == 1
    assert not any(TOKEN in m for m in messages)


def test_publish_config_is_checked_before_work(tmp_path):
    from factory.config import load_config
    from factory.errors import ConfigError

    with pytest.raises(ConfigError, match="publish.repo_id: needed"):
        load_config(None, ["stages=[shard,publish]"])
    with pytest.raises(ConfigError, match="publish.repo_id"):
        load_config(None, ["publish.repo_id=no-slash"])
    result = factory("publish", str(tmp_path), "--repo-id", "a/b/c", "--dry-run", env=hub_env(tmp_path, "http://127.0.0.1:9"))
    assert result.returncode == 2 and "--repo-id: " in result.stderr


def test_shard_and_check_on_object_storage(tmp_path, monkeypatch):
    """The run directory on S3 (moto's server on loopback): the same shards as on local disk, and
    the publish check reads them from there."""
    from moto.server import ThreadedMotoServer

    from factory.publish import publish

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(key, "fake")
        import fsspec

        monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": f"http://{host}:{port}"})
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("runs")
        settings = {"splits": {"train": 0.9, "test": 0.1}, "max_rows_per_shard": 200}
        build_dataset("s3://runs/r1", math_cot_verified(), **settings)
        build_dataset(tmp_path, math_cot_verified(), **settings)
        local = {p: c for p, c in local_files(tmp_path / "dataset").items() if p.startswith("data/")}
        assert {p: fs.cat(f"runs/r1/dataset/{p}") for p in local} == local
        messages: list[str] = []
        result = publish("s3://runs/r1", "org/ds", dry_run=True, progress=messages.append)
        assert result["rows"] == {"train": 674, "test": 54} and "the folder checks out" in messages[0]
    finally:
        server.stop()
