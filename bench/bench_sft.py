"""SFT throughput and packing, in one run (CPU, tiny Qwen2 student built locally).

1. `factory sft` (Ray Train, one worker) against a plain TRL `SFTTrainer` script with the same model,
   data and settings (same chat template, assistant-only loss, best-fit packing, batch, steps):
   trained (non-padding) tokens per second of training, and the wall time of each command.
2. Packing on a quickstart-like dataset (GSM8K questions with real model solutions, R1-shaped):
   the share of non-padding tokens in the batches the model sees, packed and padded, and
   `factory sft` tokens/s packed against unpacked.

    .venv/bin/python bench/bench_sft.py [--steps 30] [--rows 800]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"
MODELS = ("175b_verification", "175b_finetuning", "6b_verification", "6b_finetuning")
SETTINGS = {"max_length": 1024, "batch_size": 4, "learning_rate": 1e-4}


def build_dataset(out: Path, rows: int) -> Path:
    """GSM8K questions, each with one correct model solution as the R1-shaped assistant turn."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = []
    for line in GSM8K.open():
        row = json.loads(line)
        for m in MODELS:
            sol = row.get(m) or {}
            if sol.get("is_correct"):
                work, _, answer = sol["solution"].rpartition("A:")
                content = f"<think>\n{work.strip()}\n</think>\n\nThe answer is \\boxed{{{answer.strip()}}}."
                records.append({"messages": [{"role": "user", "content": row["question"]},
                                             {"role": "assistant", "content": content}]})
                break
        if len(records) == rows:
            break
    (out / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), out / "data" / "train-00000-of-00001.parquet")
    return out


def plain_trl(model: str, dataset: str, steps: int, out: str) -> None:
    """The baseline: what a user writes with TRL alone (run in its own process, like factory sft)."""
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from factory.sft.data import template_text

    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = template_text("chatml")  # the same template, with {% generation %} markers
    ds = datasets.load_dataset(dataset, split="train")
    args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=SETTINGS["batch_size"],
                     learning_rate=SETTINGS["learning_rate"], max_length=SETTINGS["max_length"], packing=True,
                     packing_strategy="bfd", assistant_only_loss=True, use_cpu=True, report_to="none",
                     save_strategy="no", logging_steps=10, disable_tqdm=True, lr_scheduler_type="cosine",
                     warmup_steps=0.03, include_num_input_tokens_seen="non_padding", seed=42)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    result = trainer.train()
    print(json.dumps({"tokens": trainer.state.num_input_tokens_seen, "train_runtime": result.metrics["train_runtime"]}))


def run_plain(model: str, dataset: Path, steps: int, tmp: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--plain-trl", model, str(dataset), str(steps), str(tmp / "plain")],
                          capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "wall": time.perf_counter() - start}


def run_factory(model: str, dataset: Path, steps: int, run_dir: Path, packing: bool) -> dict:
    factory = Path(sys.executable).parent / "factory"
    cmd = [str(factory), "sft", "--model", model, "--dataset", str(dataset), "--run-dir", str(run_dir), "--workers", "1",
           "--set", f"sft.cpus_per_worker={os.cpu_count()}", "--set", "sft.chat_template=chatml",
           "--set", f"sft.max_steps={steps}", "--set", f"sft.save_steps={steps + 1}", "--set", f"sft.packing={str(packing).lower()}",
           "--set", "sft.logging_steps=10", "--set", "sft.warmup_ratio=0.03"]
    cmd += [a for k, v in SETTINGS.items() for a in ("--set", f"sft.{k}={v}")]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    log = json.loads((run_dir / "sft" / "train_log.json").read_text())
    return {"tokens": log["num_input_tokens_seen"], "train_runtime": log["train_runtime"], "wall": time.perf_counter() - start}


def padding_share(model: str, dataset: Path, packing: bool, batches: int = 200) -> dict:
    """Non-padding share of the batches SFTTrainer feeds the model with factory's settings, and for
    packing the fill of each packed sequence (its tokens over max_length)."""
    import datasets
    from datasets.table import InMemoryTable
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    from factory.config import SFTConfig
    from factory.sft.data import load_rows, load_tokenizer, tokenize_dataset
    from factory.sft.train import trl_args

    import pyarrow as pa

    sft = SFTConfig(model=model, chat_template="chatml", packing=packing, max_length=SETTINGS["max_length"],
                    batch_size=SETTINGS["batch_size"])
    tok = load_tokenizer(sft)
    rows = tokenize_dataset(load_rows(str(dataset), "train"), tok, sft.max_length, sft.overflow).rows
    with tempfile.TemporaryDirectory() as tmp:
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model), args=TRLConfig(**trl_args(sft, tmp, False)),
                             train_dataset=datasets.Dataset(InMemoryTable(pa.Table.from_pylist(rows))), processing_class=tok)
        real = seen = 0
        for i, batch in enumerate(trainer.get_train_dataloader()):
            if i == batches:
                break
            seen += batch["input_ids"].numel()
            # Padding-free batches are one row of concatenated samples without an attention mask.
            real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        out = {"non_padding_share": real / seen}
        if packing:  # each packed row holds up to max_length tokens
            lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
            out["pack_fill"] = sum(lengths) / (len(lengths) * SETTINGS["max_length"])
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--plain-trl":
        plain_trl(*sys.argv[2:4], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rows", type=int, default=800)
    args = parser.parse_args()

    from tests.tiny_models import build_tiny_model

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        model = str(build_tiny_model(tmp / "tiny-qwen2", "qwen2"))
        dataset = build_dataset(tmp / "dataset", args.rows)
        print(f"tiny Qwen2 student, {args.rows} GSM8K rows (R1-shaped), {args.steps} steps, "
              f"batch {SETTINGS['batch_size']}, max_length {SETTINGS['max_length']}, CPU x{os.cpu_count()}")

        plain = run_plain(model, dataset, args.steps, tmp)
        packed = run_factory(model, dataset, args.steps, tmp / "run-packed", packing=True)
        padded = run_factory(model, dataset, args.steps, tmp / "run-padded", packing=False)
        rate = {name: r["tokens"] / r["train_runtime"] for name, r in (("plain", plain), ("packed", packed), ("padded", padded))}

        print("\n1. factory sft (Ray Train, 1 worker) vs plain TRL SFTTrainer, same model/data/settings")
        print(f"   plain TRL     {rate['plain']:>10,.0f} tokens/s  ({plain['tokens']:,} tokens, train {plain['train_runtime']:.1f} s, wall {plain['wall']:.1f} s)")
        print(f"   factory sft   {rate['packed']:>10,.0f} tokens/s  ({packed['tokens']:,} tokens, train {packed['train_runtime']:.1f} s, wall {packed['wall']:.1f} s)")
        print(f"   ratio factory/plain: {rate['packed'] / rate['plain']:.2f}x tokens/s (target >= 0.95); "
              f"wall {packed['wall'] / plain['wall']:.2f}x (Ray start, tokenisation and pre-flight included)")

        share_packed = padding_share(model, str(dataset), True)
        share_padded = padding_share(model, str(dataset), False)
        print("\n2. packing (best-fit, padding-free) vs padded length-grouped batches")
        print(f"   non-padding share: packed {share_packed['non_padding_share']:.3f} (target >= 0.95), "
              f"padded {share_padded['non_padding_share']:.3f}; packed sequences filled to {share_packed['pack_fill']:.3f} of max_length")
        print(f"   tokens/s: packed {rate['packed']:,.0f}, padded {rate['padded']:,.0f}: {rate['packed'] / rate['padded']:.2f}x")


if __name__ == "__main__":
    main()
