"""cluster/: the KubeRay manifests and the cluster-launcher file parse and hold what a GPU pool needs,
and `factory submit --kuberay` renders a RayJob that carries the pipeline and its inputs."""

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from typer.testing import CliRunner

from factory import jobs
from factory.cli import app
from factory.config import load_config
from factory.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"


def _gpu(container: dict) -> str | None:
    return container["resources"]["limits"].get("nvidia.com/gpu")


def _check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert _gpu(head_container) is None
    assert {"dashboard", "gcs-server"} <= {p["name"] for p in head_container["ports"]}
    (pool,) = spec["workerGroupSpecs"]
    assert pool["minReplicas"] == 0 < pool["maxReplicas"]
    assert _gpu(pool["template"]["spec"]["containers"][0]) == "1"
    assert json.loads(yaml.safe_load(pool["rayStartParams"]["resources"])) == {"pool": 1}


def test_raycluster_has_cpu_head_and_autoscaling_gpu_pool():
    manifest = yaml.safe_load((CLUSTER / "raycluster.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    _check_cluster_spec(manifest["spec"])


def test_rayjob_template_brings_its_own_cluster():
    manifest = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    assert manifest["spec"]["shutdownAfterJobFinishes"] is True
    _check_cluster_spec(manifest["spec"]["rayClusterSpec"])


def test_cluster_launcher_file_passes_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "gpu-pool-aws.yaml").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    pool = types["gpu_pool"]
    assert pool["resources"]["GPU"] >= 1 and pool["min_workers"] == 0 < pool["max_workers"]
    assert {".venv", "runs", ".git"} <= set(config["rsync_exclude"])


def _rendered(tmp_path, *args) -> list[dict]:
    out = tmp_path / "job.yaml"
    result = CliRunner().invoke(app, ["submit", str(QUICKSTART), "--kuberay", "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(out.read_text()))


def test_rendered_rayjob_carries_the_pipeline_and_its_inputs(tmp_path):
    overrides = ["--set", "teacher.sampling.n=3", "--run-dir", "s3://bucket/runs/q"]
    configmap, job = _rendered(tmp_path, *overrides)
    assert configmap["kind"] == "ConfigMap" and job["kind"] == "RayJob"
    assert configmap["metadata"]["name"] == job["metadata"]["name"]
    assert job["spec"]["entrypoint"] == f"cd {jobs.KUBERAY_MOUNT} && python -m factory.cli run pipeline.yaml"

    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (volume,) = [v for v in head["volumes"] if v["name"] == "factory-job"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert {"name": "factory-job", "mountPath": jobs.KUBERAY_MOUNT} in head["containers"][0]["volumeMounts"]

    # Lay the ConfigMap out as the pod sees it, then load it as the job will.
    mount = tmp_path / "mount"
    for item in volume["configMap"]["items"]:
        (mount / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (mount / item["path"]).write_text(configmap["data"][item["key"]])
    job_cfg = load_config(mount / "pipeline.yaml")
    local_cfg = load_config(QUICKSTART, ["teacher.sampling.n=3"], "s3://bucket/runs/q")
    assert job_cfg.run_dir == "s3://bucket/runs/q" and job_cfg.teacher.sampling.n == 3
    assert Path(job_cfg.sources[0].path).read_text() == Path(local_cfg.sources[0].path).read_text()
    assert Path(job_cfg.teacher.prompt_template).read_text() == Path(local_cfg.teacher.prompt_template).read_text()
    dumps = [cfg.model_dump() for cfg in (job_cfg, local_cfg)]
    for d in dumps:
        d["sources"][0]["path"] = d["teacher"]["prompt_template"] = None
    assert dumps[0] == dumps[1]


def test_kuberay_refuses_a_laptop_run_dir(tmp_path):
    result = CliRunner().invoke(app, ["submit", str(QUICKSTART), "--kuberay"])
    assert result.exit_code == 2
    assert "run_dir" in result.output and "s3://" in result.output


def test_kuberay_refuses_inputs_over_a_configmap(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text((json.dumps({"problem": "x" * 1000, "answer": "1"}) + "\n") * 1200)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"run_dir": "s3://b/r", "sources": [{"path": "big.jsonl"}]}))
    with pytest.raises(ConfigError, match="over a ConfigMap"):
        jobs.render_rayjob(jobs.job_bundle(pipeline, in_pods=True))
