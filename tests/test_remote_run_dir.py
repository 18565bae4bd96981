"""Run directories on S3: every stage's reads and writes, markers, stats and rejects, and resume, against
moto's S3 server on loopback. s3fs (and every AWS SDK) finds the server through AWS_ENDPOINT_URL, the
way a user points the factory at MinIO or another S3-compatible store."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from factory.config import SourceConfig, VerifyConfig
from factory.ingest import ingest
from factory.stages.verify import verify_rows
from tests.conftest import MATH_COT
from tests.local_ray import free_port

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "factory-runs"


@pytest.fixture(scope="module")
def s3_env():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield {**os.environ, **env, "FACTORY_PROGRESS_BARS": "0"}
    server.stop()


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    """Real completions of 8 problems (2 samples each) and one malformed row."""
    path = tmp_path_factory.mktemp("traces") / "traces.jsonl"
    with path.open("w") as f:
        for line in MATH_COT.open().readlines()[:8]:
            row = json.loads(line)
            for i, completion in enumerate(row["code"][:2]):
                f.write(json.dumps({"problem_id": f"math-{row['idx']}", "problem": row["question"],
                                    "answer": row["answer"], "completion": completion, "sample_idx": i}) + "\n")
        f.write('{"problem": "no completion here"}\n')
    return path


def _s3():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)  # a fresh listing, as another reader would see


def _factory(env, *args) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "factory.cli", *args], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


PLAIN_COT = ["--set", "verify.require_think=false"]


@pytest.fixture(scope="module")
def verified_on_s3(s3_env, traces):
    run = f"s3://{BUCKET}/runs/cot"
    verify = _factory(s3_env, "verify", "--input", str(traces), "--run-dir", run, *PLAIN_COT)
    shard = _factory(s3_env, "shard", "--run-dir", run, *PLAIN_COT)
    return run, verify, shard


def test_verify_and_shard_write_everything_to_s3(verified_on_s3, traces):
    run, _, shard = verified_on_s3
    fs, root = _s3(), f"{BUCKET}/runs/cot"
    files = {p[len(root) + 1:] for p in fs.find(root)}
    assert {"input_traces/_SUCCESS", "verify/_SUCCESS", "dataset/_SUCCESS", "stats.json", "rejects/input_traces.jsonl",
            "dataset/README.md", "dataset/stats.json", "dataset/data/train-00000-of-00001.parquet"} <= files
    assert not any(".tmp" in f for f in files)

    rows, rejects = ingest([SourceConfig(path=str(traces))], "trace")
    expected = verify_rows(rows, VerifyConfig(require_think=False))
    accepted = sorted(r["trace_key"] for r in expected if r["accepted"])
    stats = json.loads(fs.cat(f"{root}/stats.json"))
    assert stats["ingest_traces"]["rejected"] == {"missing_completion": 1}
    assert stats["verify"]["in"] == len(rows) and stats["verify"]["out"] == len(accepted) > 0
    assert stats["shard"]["out"] == len(accepted)
    reject = json.loads(fs.cat(f"{root}/rejects/input_traces.jsonl"))
    assert reject["reason"] == "missing_completion"
    verified = pq.read_table(f"{root}/verify", filesystem=fs)
    assert sorted(verified.column("trace_key").to_pylist()) == sorted(r["trace_key"] for r in rows)
    dataset = pq.read_table(f"{root}/dataset/data", filesystem=fs).to_pylist()
    assert sorted(r["trace_key"] for r in dataset) == accepted
    assert f"run directory: {run}" in shard.stdout


def test_rerun_on_s3_resumes_and_redoes_only_what_changed(verified_on_s3, s3_env, traces):
    run = verified_on_s3[0]
    fs, root = _s3(), f"{BUCKET}/runs/cot"
    shard_before = fs.cat(f"{root}/dataset/data/train-00000-of-00001.parquet")

    again = _factory(s3_env, "verify", "--input", str(traces), "--run-dir", run, *PLAIN_COT)
    assert "input_traces: already ingested" in again.stderr and "verify: already done" in again.stderr
    assert "shard: already done" in _factory(s3_env, "shard", "--run-dir", run, *PLAIN_COT).stderr

    # A shard killed before its marker is redone, to the same bytes.
    fs.rm(f"{root}/dataset/_SUCCESS")
    redone = _factory(s3_env, "shard", "--run-dir", run, *PLAIN_COT)
    assert "shard: already done" not in redone.stderr
    assert _s3().cat(f"{root}/dataset/data/train-00000-of-00001.parquet") == shard_before

    # A changed verify setting re-verifies.
    changed = _factory(s3_env, "verify", "--input", str(traces), "--run-dir", run, *PLAIN_COT,
                       "--set", "verify.math.timeout_s=6")
    assert "verify: already done" not in changed.stderr and "traces accepted" in changed.stderr


def test_stage_listing_sees_files_other_processes_wrote(s3_env):
    """Ray workers write stage folders from other processes: the driver's s3fs listing cache must not hide them."""
    import boto3
    import pyarrow as pa

    from factory.storage import RunDir

    run = RunDir(f"s3://{BUCKET}/runs/listing")
    run.write_part("verify", pa.table({"a": [1]}), "part-0.parquet")
    assert len(run.parts("verify")) == 1
    boto3.client("s3").put_object(Bucket=BUCKET, Key="runs/listing/verify/part-1.parquet", Body=b"")
    assert [Path(p).name for p in run.parts("verify")] == ["part-0.parquet", "part-1.parquet"]


def test_gs_run_dir_without_gcsfs_names_the_extra():
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    from factory.errors import MissingDependency
    from factory.storage import RunDir

    with pytest.raises(MissingDependency, match=r"\.\[gcs\]"):
        RunDir("gs://bucket/run")


@pytest.mark.engine
def test_quickstart_on_s3_and_its_resume(s3_env, tiny_qwen2):
    run = f"s3://{BUCKET}/runs/quickstart"
    args = ["run", str(ROOT / "pipelines" / "quickstart.yaml"), "--run-dir", run,
            "--set", f"teacher.model={tiny_qwen2}",
            "--set", "teacher.sampling.max_tokens=16", "--set", "sources.0.limit=4"]
    first = _factory(s3_env, *args)
    fs, root = _s3(), f"{BUCKET}/runs/quickstart"
    stats = json.loads(fs.cat(f"{root}/stats.json"))
    assert stats["generate"]["out"] == stats["verify"]["in"] == 8
    assert fs.exists(f"{root}/dataset/README.md") and fs.exists(f"{root}/generate")
    assert re.search(r"generate: 0/8 traces .*8 to write", first.stderr)
    second = _factory(s3_env, *args)
    assert re.search(r"generate: 8/8 traces .*0 to write", second.stderr)
    assert "verify: already done" in second.stderr
