"""Prompt rendering: user template, optional system prompt, the chat template, the reasoning prefix.

Rendering happens here rather than in Ray Data LLM's chat-template stage so that the reasoning
prefix is guaranteed: R1-style models expect the assistant turn to open with "<think>\n" and some
chat templates add it while others do not. The prefix is part of the completion we store.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from factory.config import TeacherConfig


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
    """The exact text the engine sees, ending with the reasoning prefix."""
    tok = _tokenizer(teacher)
    text = tok.apply_chat_template(chat_messages(teacher, problem), tokenize=False, add_generation_prompt=True)
    prefix = teacher.reasoning_prefix
    if prefix and not text.endswith(prefix):
        # Some templates add the prefix minus its newline ("<think>"): complete it rather than doubling it.
        stripped = prefix.rstrip("\n")
        text = text + prefix[len(stripped):] if stripped and text.endswith(stripped) else text + prefix
    return text
