"""SFT rows -> token ids and a loss mask that covers the assistant turns and nothing else.

The mask is computed here from the rendered text rather than with TRL's `assistant_only_loss`, which
needs `{% generation %}` markers in the template and silently trains on nothing (or everything) when a
model's shipped template lacks them. Rendering the conversation up to each assistant turn, with and
without that turn, gives the turn's exact character span in any template that renders a conversation
as a prefix of its continuation; token offsets then turn the span into a mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from factory.config import SFTConfig
from factory.errors import InputError

BUILTIN_TEMPLATES = {"chatml": "chatml.jinja", "r1": "r1.jinja"}


class RowError(ValueError):
    """A row that cannot become a training sample; `str(e)` is the reason counted in stats."""


def template_text(name_or_path: str) -> str:
    if name_or_path in BUILTIN_TEMPLATES:
        return resources.files("factory.sft").joinpath("templates").joinpath(BUILTIN_TEMPLATES[name_or_path]).read_text("utf-8")
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(f"sft.chat_template: {name_or_path} is neither a file nor one of {sorted(BUILTIN_TEMPLATES)}")
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=4)
def _load_tokenizer(model: str, revision: str | None, chat_template: str | None):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as e:
        raise InputError(f"sft.model: cannot load a tokenizer from {model}: {e}") from e
    if chat_template:
        tok.chat_template = template_text(chat_template)
    if not tok.chat_template:
        raise InputError(f"sft.model: {model} has no chat template; set sft.chat_template (e.g. chatml)")
    if not getattr(tok, "is_fast", False):
        raise InputError(f"sft.model: {model} has no fast tokenizer; the loss mask needs token offsets")
    return tok


def load_tokenizer(sft: SFTConfig):
    return _load_tokenizer(sft.model, sft.revision, sft.chat_template)


def load_rows(source: str, split: str):
    """The dataset folder the pipeline wrote (HF layout) or a Hub dataset name, as a `datasets.Dataset`."""
    import datasets

    try:
        ds = datasets.load_dataset(source, split=split)
    except Exception as e:  # a missing folder, an unknown Hub name, a missing split: all unusable input
        raise InputError(f"sft dataset {source} (split {split}): cannot load: {e}") from e
    if "messages" not in ds.column_names:
        raise InputError(f"sft dataset {source}: no `messages` column (found {ds.column_names})")
    return ds


def source_identity(source: str) -> list:
    """A Hub name, or a local folder with its files' names, sizes and times: changed files, new identity."""
    path = Path(source)
    if not path.is_dir():
        return [source]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".parquet", ".json", ".jsonl", ".safetensors", ".bin"))
    return [source] + [(str(p.relative_to(path)), p.stat().st_size, int(p.stat().st_mtime)) for p in files]


def _render(tok, messages: list[dict], generation_prompt: bool = False) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


@dataclass
class Sample:
    """One conversation rendered and tokenised: `spans` are the assistant turns' (start, end) characters,
    each ending after its end-of-turn token."""

    text: str
    input_ids: list[int]
    assistant_masks: list[int]
    spans: list[tuple[int, int]]
    offsets: list[tuple[int, int]] = field(repr=False)


def check_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise RowError("no_messages")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise RowError("bad_message")
    if messages[-1]["role"] != "assistant":
        raise RowError("no_final_assistant_turn")
    if not messages[-1]["content"].strip():
        raise RowError("empty_assistant_turn")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def assistant_spans(tok, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and each assistant turn's span, from the turn's first character to
    the end of the end-of-turn (EOS) token; a turn whose rendering lacks the EOS ends at its last
    character (pre-flight reports it)."""
    text = _render(tok, messages)
    spans = []
    eos = tok.eos_token or ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tok, messages[:i], generation_prompt=True) if i else ""
        upto = _render(tok, messages[: i + 1])
        if not upto.startswith(before) or not text.startswith(upto):
            raise RowError("template_not_prefix_stable")
        turn = upto[len(before):]
        end = turn.find(eos, turn.find(m["content"]) + len(m["content"])) if eos and m["content"] in turn else -1
        spans.append((len(before), len(before) + (end + len(eos) if end >= 0 else len(turn.rstrip()))))
    return text, spans


def tokenize(tok, messages: list[dict]) -> Sample:
    text, spans = assistant_spans(tok, messages)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    # A token is trained on when it starts inside an assistant span.
    mask = [int(any(s <= start < e for s, e in spans)) for start, _ in offsets]
    return Sample(text, list(enc["input_ids"]), mask, spans, offsets)


@dataclass
class Tokenized:
    rows: list[dict]  # {"input_ids", "assistant_masks"}, ready for TRL's SFTTrainer
    counts: dict
    rejects: list[dict]


def tokenize_dataset(ds, tok, max_length: int, overflow: str) -> Tokenized:
    """Every row tokenised with its mask; rows over `max_length` dropped or truncated, each counted,
    and rows that cannot be used set aside with their reason."""
    rows, rejects = [], []
    dropped = truncated = tokens = trained = 0
    for i, raw in enumerate(ds):
        try:
            sample = tokenize(tok, check_messages(raw.get("messages")))
        except RowError as e:
            rejects.append({"row": i, "reason": str(e), "problem_id": raw.get("problem_id")})
            continue
        ids, mask = sample.input_ids, sample.assistant_masks
        if len(ids) > max_length:
            if overflow == "drop":
                dropped += 1
                continue
            ids, mask = ids[:max_length], mask[:max_length]
            truncated += 1
            if not any(mask):  # the prompt alone filled max_length: nothing left to learn from
                rejects.append({"row": i, "reason": "truncated_to_no_assistant_tokens", "problem_id": raw.get("problem_id")})
                continue
        rows.append({"input_ids": ids, "assistant_masks": mask})
        tokens += len(ids)
        trained += sum(mask)
    counts = {
        "in": len(ds),
        "out": len(rows),
        "dropped_too_long": dropped,
        "truncated": truncated,
        "tokens": tokens,
        "assistant_tokens": trained,
    }
    return Tokenized(rows, counts, rejects)
