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

STAGES = ("generate", "verify", "shard")
DEFAULT_TEACHER = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Strict):
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

    @model_validator(mode="after")
    def _one_origin(self) -> "SourceConfig":
        if (self.path is None) == (self.hf is None):
            raise ValueError("give exactly one of 'path' or 'hf'")
        return self


class SamplingConfig(_Strict):
    # R1's recommended settings for its distilled models.
    n: int = Field(2, ge=1)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(4096, ge=1)


class TeacherConfig(_Strict):
    model: str = DEFAULT_TEACHER
    revision: str | None = None
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
    batch_size: int = Field(16, ge=1)
    concurrency: int = Field(1, ge=1, description="engine replicas")


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


class ShardConfig(_Strict):
    split: str = "train"
    max_rows_per_shard: int = Field(50_000, ge=1)
    system_prompt: str | None = Field(None, description="system message put in each SFT row")
    license: str = "mit"
    pretty_name: str | None = None


class PipelineConfig(_Strict):
    run_dir: str = "runs/default"
    stages: list[str] = Field(default_factory=lambda: list(STAGES))
    sources: list[SourceConfig] = Field(default_factory=list)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    shard: ShardConfig = Field(default_factory=ShardConfig)

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, stages: list[str]) -> list[str]:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; expected some of {list(STAGES)}")
        return stages


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
    for key in ("prompt_template", "chat_template"):
        setattr(cfg.teacher, key, _resolve(getattr(cfg.teacher, key), base))
    _check_files(cfg)
    return cfg


def _check_files(cfg: PipelineConfig) -> None:
    for i, src in enumerate(cfg.sources):
        if src.path and "://" not in src.path and not Path(src.path).exists():
            raise ConfigError(f"sources.{i}.path: {src.path} does not exist")
    for key in ("prompt_template", "chat_template"):
        value = getattr(cfg.teacher, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"teacher.{key}: {value} does not exist")
