"""Prompt rendering: user template, optional system prompt, the chat template, the reasoning prefix.

Rendering happens here rather than in Ray Data LLM's chat-template stage so that the reasoning
prefix is guaranteed: R1-style models expect the assistant turn to open with "<think>\n" and some
chat templates add it while others do not. The prefix is part of the completion we store.

Modes: `reasoning` opens the assistant turn with the reasoning prefix; `direct` adds none (the
answer without a think block, for the non-reasoning share of a mixture). A source's `mode` and
`prompt_template` override the teacher's for that source's rows (`source_teachers`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from factory.config import PipelineConfig, SourceConfig, TeacherConfig

MODES = ("reasoning", "direct")


def source_teacher(teacher: TeacherConfig, source: SourceConfig) -> TeacherConfig:
    """The teacher settings one source's rows are generated with."""
    update = {k: getattr(source, k) for k in ("mode", "prompt_template") if getattr(source, k) is not None}
    return teacher.model_copy(update=update) if update else teacher


def source_teachers(cfg: PipelineConfig) -> dict[str, TeacherConfig]:
    """Source name (the `source` of each row) -> its teacher settings; rows of other sources use cfg.teacher."""
    from factory.ingest import source_name

    return {source_name(s): source_teacher(cfg.teacher, s) for s in cfg.sources}


def reasoning_prefix(teacher: TeacherConfig) -> str:
    """What the assistant turn opens with and each completion starts with: nothing in direct mode."""
    return teacher.reasoning_prefix if teacher.mode == "reasoning" else ""


@lru_cache(maxsize=8)
def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def user_message(teacher: TeacherConfig, problem: str) -> str:
    if not teacher.prompt_template:
        return problem
    # replace, not str.format: math templates are full of braces (\boxed{}).
    return _read(teacher.prompt_template).replace("{problem}", problem)


def chat_messages(teacher: TeacherConfig, problem: str) -> list[dict]:
    messages = [{"role": "system", "content": teacher.system_prompt}] if teacher.system_prompt else []
    return messages + [{"role": "user", "content": user_message(teacher, problem)}]


@lru_cache(maxsize=4)
def load_tokenizer(model: str, revision: str | None, chat_template: str | None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model, revision=revision)
    if chat_template:
        tok.chat_template = _read(chat_template)
    return tok


def _tokenizer(teacher: TeacherConfig):
    return load_tokenizer(teacher.model, teacher.revision, teacher.chat_template)


def prompt_token_ids(teacher: TeacherConfig, prompt: str) -> list[int]:
    # The rendered template already holds any BOS token: adding special tokens again would double it.
    return _tokenizer(teacher)(prompt, add_special_tokens=False)["input_ids"]


def render_prompt(teacher: TeacherConfig, problem: str) -> str:
    """The exact text the engine sees, ending with the reasoning prefix (reasoning mode)."""
    tok = _tokenizer(teacher)
    text = tok.apply_chat_template(chat_messages(teacher, problem), tokenize=False, add_generation_prompt=True)
    prefix = reasoning_prefix(teacher)
    if prefix and not text.endswith(prefix):
        # Some templates add the prefix minus its newline ("<think>"): complete it rather than doubling it.
        stripped = prefix.rstrip("\n")
        text = text + prefix[len(stripped):] if stripped and text.endswith(stripped) else text + prefix
    return text
