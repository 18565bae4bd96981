"""Two Ray nodes on one machine: a head, and a node offering the custom resource `pool` that stands for
the GPU pool. The quickstart (tiny model, greedy sampling, 6 problems) goes to the head as a Ray Job with
`cluster.pool_resources={pool: 1}`: it must finish SUCCEEDED with its engine on the pool node, and match
a single-node run of the same command (same counts, same problem ids and trace keys)."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.local_ray import LocalCluster, ray_env

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"
# Greedy sampling makes both runs write the same traces; a few problems keep the engine's work small.
SETTINGS = ["--set", "teacher.sampling.temperature=0", "--set", "teacher.sampling.max_tokens=24",
            "--set", "sources.0.limit=6"]
POOL = ["--set", "cluster.pool_resources={pool: 1}"]


def _factory(env: dict, *args, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factory.cli", *args], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def two_nodes():
    cluster = LocalCluster().start_head(num_cpus=1)
    try:
        cluster.add_node(num_cpus=1, resources={"pool": 1})
        nodes = cluster.wait_for_nodes(2)
        assert len(nodes) == 2, nodes
        yield cluster, next(n["id"] for n in nodes if n["resources"].get("pool"))
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def single_node_run(tmp_path_factory, tiny_qwen2) -> Path:
    run_dir = tmp_path_factory.mktemp("single") / "run"
    env = {**ray_env(), "FACTORY_PROGRESS_BARS": "0"}
    done = _factory(env, "run", str(QUICKSTART), "--run-dir", str(run_dir), "--set", f"teacher.model={tiny_qwen2}",
                    *SETTINGS)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def _engine_nodes(cluster: LocalCluster) -> list[str]:
    """Node ids of every vLLM engine actor the cluster has run, finished ones included."""
    code = (
        "import json; from ray.util.state import list_actors; "
        "print(json.dumps([a.node_id for a in list_actors(address=%r, detail=True, limit=10000) "
        "if 'vLLMEngineStage' in (a.repr_name or '') + a.class_name]))"
    ) % cluster.dashboard
    out = subprocess.run([sys.executable, "-c", code], env=cluster.env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(run_dir: Path) -> dict:
    stats = json.loads((run_dir / "stats.json").read_text())
    counts = {stage: {k: entry.get(k) for k in ("in", "out", "rejected")} for stage, entry in stats.items()}
    generated = pq.read_table(run_dir / "generate", columns=["problem_id", "trace_key"])
    shard = pq.read_table(run_dir / "dataset" / "data", columns=["problem_id"])
    return {
        "counts": counts,
        "problem_ids": sorted(set(generated.column("problem_id").to_pylist())),
        "trace_keys": sorted(generated.column("trace_key").to_pylist()),
        "published": sorted(shard.column("problem_id").to_pylist()),
    }


def test_quickstart_job_on_two_nodes_matches_a_single_node_run(two_nodes, single_node_run, tiny_qwen2, tmp_path):
    cluster, pool_node = two_nodes
    run_dir = tmp_path / "run"
    done = _factory(cluster.env, "submit", str(QUICKSTART), "--run-dir", str(run_dir), "--address", cluster.dashboard,
                    "--set", f"teacher.model={tiny_qwen2}", *SETTINGS, *POOL, "--follow")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    job_id = done.stdout.splitlines()[0]
    assert f"job {job_id}: SUCCEEDED" in done.stdout
    # Observability: the job's log holds each stage's progress and counts, stats.json every stage.
    assert "generate: 12/12 traces" in done.stdout and "traces accepted" in done.stdout
    assert f"dashboard: {cluster.dashboard}/#/jobs/{job_id}" in done.stderr

    engines = _engine_nodes(cluster)
    assert engines and set(engines) == {pool_node}

    local, remote = _summary(single_node_run), _summary(run_dir)
    assert len(local["problem_ids"]) == 6 and len(local["trace_keys"]) == 12
    assert remote == local
