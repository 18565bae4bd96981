"""The final student: Hugging Face folder (loadable by transformers and vLLM), its model card, and the
optional push to the Hub."""

from __future__ import annotations

import os
import re

import yaml

from factory.config import PipelineConfig, SFTConfig
from factory.storage import RunDir

FINAL = "sft/final"
TRAIN_LOG = "sft/train_log.json"
CARD = "README.md"
EVAL_START, EVAL_END = "<!-- eval:start -->", "<!-- eval:end -->"


def save_final(trainer, tok, sft: SFTConfig, run: RunDir, rank: int, tmp: str, log: dict) -> None:
    """Called on every worker after training (FSDP gathers the weights across ranks); rank 0 writes."""
    local = os.path.join(tmp, "final")
    if sft.lora.enabled and sft.lora.merge:
        if rank == 0:  # adapter folded into the base weights: vLLM loads the folder as a plain model
            trainer.model.merge_and_unload().save_pretrained(local)
    else:
        trainer.save_model(local)
    if rank != 0:
        return
    # The tokenizer goes with the chat template the student was trained on, so that eval and serving
    # render prompts the same way.
    tok.save_pretrained(local)
    run.reset_stage(FINAL)
    run.fs.makedirs(run.path(FINAL), exist_ok=True)
    for name in os.listdir(local):
        run.fs.put(os.path.join(local, name), run.path(FINAL, name), recursive=True)
    run.write_json(TRAIN_LOG, log)


def dataset_name(cfg: PipelineConfig, run: RunDir) -> str:
    if cfg.sft.dataset:
        return cfg.sft.dataset
    if "publish" in cfg.stages and cfg.publish.repo_id:  # published by this run: name it on the Hub
        return cfg.publish.repo_id
    return run.path("dataset")


def render_model_card(cfg: PipelineConfig, run: RunDir, log: dict) -> str:
    sft = cfg.sft
    dataset = dataset_name(cfg, run)
    header = {
        "base_model": sft.model,
        "datasets": [dataset],
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["reasoning", "distillation", "sft", "trl"],
    }
    losses = [h["loss"] for h in log["log_history"] if "loss" in h]
    settings = {
        "method": "LoRA (merged)" if sft.lora.enabled and sft.lora.merge else ("LoRA" if sft.lora.enabled else "full fine-tune"),
        "steps": log["global_step"],
        "workers": log["world_size"],
        "max_length": sft.max_length,
        "packing": "on GPUs only (default)" if sft.packing is None else sft.packing,
        "learning_rate": sft.learning_rate,
        "per-worker batch x grad accum": f"{sft.batch_size} x {sft.grad_accum}",
        "loss": "assistant tokens only (think block included)",
        "first / final logged loss": f"{losses[0]:.4f} / {losses[-1]:.4f}" if losses else "n/a",
        "trained tokens": log["num_input_tokens_seen"],
    }
    rows = "\n".join(f"| {k} | {v} |" for k, v in settings.items())
    return (
        f"---\n{yaml.safe_dump(header, sort_keys=False, allow_unicode=True)}---\n\n"
        f"# {sft.model.rstrip('/').rsplit('/', 1)[-1]} distilled on {dataset}\n\n"
        f"A reasoning student fine-tuned from `{sft.model}` on the dataset `{dataset}` "
        "(teacher traces kept by rule-based verifiers), with TRL's SFTTrainer on Ray Train. "
        "It writes its reasoning in a `<think>...</think>` block, then the answer.\n\n"
        f"## Training\n\n| setting | value |\n| --- | --- |\n{rows}\n\n"
        f"## Evaluation\n\n{EVAL_START}\nNot evaluated yet (`factory eval`).\n{EVAL_END}\n"
    )


def write_model_card(cfg: PipelineConfig, run: RunDir, log: dict) -> None:
    run.write_text(f"{FINAL}/{CARD}", render_model_card(cfg, run, log))


def with_eval_section(card: str, table: str) -> str:
    """The card with its evaluation section replaced (or appended when the card has none)."""
    block = f"{EVAL_START}\n{table}\n{EVAL_END}"
    pattern = re.compile(re.escape(EVAL_START) + ".*?" + re.escape(EVAL_END), re.S)
    if pattern.search(card):
        return pattern.sub(lambda _: block, card)
    return card.rstrip("\n") + f"\n\n## Evaluation\n\n{block}\n"


def push_model(folder: str, repo_id: str, private: bool = True, api=None) -> str:
    """Upload the final model folder (card included) to the Hub; the token comes from HF_TOKEN."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model", commit_message="factory sft: final student")
    return getattr(info, "commit_url", str(info))

