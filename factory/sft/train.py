"""The SFT stage: tokenise and pre-flight on the driver, then a Ray Train TorchTrainer whose workers
each run TRL's SFTTrainer on the same tokenised rows (the Trainer's distributed sampler shards them).

Checkpoints: every `save_steps` the Hugging Face checkpoint (model, optimizer, scheduler, trainer
state) is reported to Ray Train, which keeps the last `keep_checkpoints` under run_dir/sft/<run name>.
The run name holds the fingerprint of the settings and data, so re-running the same command finds
the same run, Ray Train hands its latest checkpoint to the workers, and TRL resumes from it with the
step count, optimizer and scheduler intact. A changed setting starts a new run instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from typing import Callable

from factory import stats
from factory.config import PipelineConfig, SFTConfig
from factory.errors import ConfigError, FactoryError, InputError, MissingDependency
from factory.sft.export import FINAL, TRAIN_LOG
from factory.storage import RunDir

STAGE = "sft"
TOKENIZED = "sft/tokenized"
STRATEGY_FILES = {"fsdp": "fsdp.json", "deepspeed": "deepspeed_zero3.json"}


class TrainingFailed(FactoryError):
    """A worker failed; the message carries its error."""


def dataset_source(cfg: PipelineConfig, run: RunDir) -> tuple[str, object]:
    """(what to load, its identity for the fingerprint): sft.dataset, else the run's dataset folder."""
    from factory.sft.data import source_identity

    if cfg.sft.dataset:
        return cfg.sft.dataset, source_identity(cfg.sft.dataset)
    if not run.marker("dataset"):
        raise InputError(f"sft: no finished dataset in {run.uri}; run shard first or set sft.dataset")
    return run.path("dataset"), run.marker("dataset")


def strategy_args(sft: SFTConfig) -> dict:
    """TrainingArguments for FSDP / DeepSpeed ZeRO-3, from the user's file or the one shipped here.
    The FSDP file is a `fsdp_config` plus its `fsdp` switch; wrapping follows the model's own
    `_no_split_modules` (its decoder layer class), so one file serves Qwen and Llama students."""
    if sft.strategy == "ddp":
        return {}
    path = sft.strategy_config or str(resources.files("factory.sft").joinpath("configs").joinpath(STRATEGY_FILES[sft.strategy]))
    if sft.strategy == "deepspeed":
        return {"deepspeed": path}
    with open(path, encoding="utf-8") as f:
        fsdp = json.load(f)
    return {"fsdp": fsdp.pop("fsdp"), "fsdp_config": fsdp}


def trl_args(sft: SFTConfig, output_dir: str, use_gpu: bool) -> dict:
    """Keyword arguments of trl.SFTConfig for these settings; `sft.trl` overrides any of them."""
    bf16 = sft.bf16 if sft.bf16 is not None else use_gpu
    packing = sft.packing if sft.packing is not None else use_gpu
    args = dict(
        output_dir=output_dir,
        num_train_epochs=sft.epochs,
        max_steps=sft.max_steps,
        per_device_train_batch_size=sft.batch_size,
        gradient_accumulation_steps=sft.grad_accum,
        learning_rate=sft.learning_rate,
        lr_scheduler_type=sft.lr_scheduler,
        warmup_steps=sft.warmup_ratio,  # below 1: a share of the steps
        weight_decay=sft.weight_decay,
        bf16=bf16,
        gradient_checkpointing=sft.gradient_checkpointing,
        use_liger_kernel=sft.liger,
        max_length=sft.max_length,
        # Rows arrive tokenised with their assistant mask (data.py); TRL turns the mask into labels.
        packing=packing,
        packing_strategy="bfd",  # best-fit packing, padding-free: position_ids mark each sample's start
        train_sampling_strategy="group_by_length" if sft.group_by_length and not packing else "random",
        save_strategy="steps",
        save_steps=sft.save_steps,
        save_total_limit=sft.keep_checkpoints,
        logging_steps=sft.logging_steps,
        seed=sft.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not use_gpu,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        **strategy_args(sft),
    )
    args.update(sft.trl)
    return args


def check_trl_args(sft: SFTConfig) -> None:
    """Build trl.SFTConfig on the driver, so a bad `sft.trl` key fails before any Ray work."""
    from trl import SFTConfig as TRLConfig

    with tempfile.TemporaryDirectory() as tmp:
        try:
            TRLConfig(**trl_args(sft, tmp, use_gpu=False))
        except ImportError as e:  # deepspeed, liger-kernel: optional
            raise MissingDependency(f"sft: {e}; install it on the training nodes (pip install deepspeed / liger-kernel)") from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"sft: invalid training arguments (sft.trl or the settings): {e}") from None


def _load_model(sft: SFTConfig, bf16: bool):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        sft.model, revision=sft.revision, dtype=torch.bfloat16 if bf16 else torch.float32
    )


def _peft_config(sft: SFTConfig):
    if not sft.lora.enabled:
        return None
    from peft import LoraConfig

    lora = sft.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def _train_dataset(run: RunDir):
    import datasets
    from datasets.table import InMemoryTable

    return datasets.Dataset(InMemoryTable(run.read_stage(TOKENIZED)))


def _resume_dir(tmp: str) -> tuple[str | None, int]:
    """The Hugging Face checkpoint of the run's latest Ray Train checkpoint, copied locally, and its step."""
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None, 0
    local = os.path.join(ckpt.to_directory(os.path.join(tmp, "resume")), RayTrainReportCallback.CHECKPOINT_NAME)
    with open(os.path.join(local, "trainer_state.json")) as f:
        return local, int(json.load(f)["global_step"])


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    from factory.sft.data import load_tokenizer
    from factory.sft.export import save_final

    sft = SFTConfig.model_validate(config["sft"])
    run = RunDir(config["run_uri"])
    rank = ray.train.get_context().get_world_rank()
    tmp = tempfile.mkdtemp(prefix=f"factory-sft-{config['fingerprint']}-rank{rank}-")
    try:
        args = TRLConfig(**trl_args(sft, os.path.join(tmp, "out"), config["use_gpu"]))
        tok = load_tokenizer(sft)
        trainer = SFTTrainer(
            model=_load_model(sft, args.bf16),
            args=args,
            train_dataset=_train_dataset(run),
            processing_class=tok,
            peft_config=_peft_config(sft),
        )
        trainer.add_callback(RayTrainReportCallback())
        trainer = prepare_trainer(trainer)
        resume, resumed_step = _resume_dir(tmp)
        output = trainer.train(resume_from_checkpoint=resume)
        save_final(trainer, tok, sft, run, rank, tmp, {
            "resumed_from_step": resumed_step,
            "global_step": trainer.state.global_step,
            "train_runtime": output.metrics.get("train_runtime"),
            "train_loss": output.metrics.get("train_loss"),
            "num_input_tokens_seen": trainer.state.num_input_tokens_seen,
            "world_size": ray.train.get_context().get_world_size(),
            "log_history": trainer.state.log_history,
        })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _absolute(uri: str) -> str:
    # Ray Train's storage and the workers (whose working directory is not the driver's) need an
    # absolute local path or a URI.
    return uri if "://" in uri else os.path.abspath(uri)


def _storage(run: RunDir) -> str:
    return _absolute(run.uri) + "/" + STAGE


def run_sft(cfg: PipelineConfig, run: RunDir, address: str | None, progress: Callable[[str], None] = print) -> dict:
    from factory.pipeline import fingerprint
    from factory.sft.data import load_rows, load_tokenizer, tokenize_dataset
    from factory.sft.preflight import check_lengths, preflight_samples

    sft = cfg.sft
    if not sft.model:
        raise InputError("sft.model: name the student (a Hub id or a local folder)")
    source, identity = dataset_source(cfg, run)
    fp = fingerprint(sft.model_dump(exclude={"push_to_hub", "private"}), identity)
    if run.is_done(STAGE, fp):
        progress(f"sft: already trained with these settings ({run.path(FINAL)})")
        return run.read_json(stats.STATS_FILE, default={}).get(STAGE, {})
    check_trl_args(sft)
    tok = load_tokenizer(sft)
    rows = load_rows(source, sft.split)
    checked = preflight_samples(tok, rows.select(range(min(sft.preflight_samples, len(rows)))))
    with stats.timed(run, STAGE) as entry:
        tokenized = tokenize_dataset(rows, tok, sft.max_length, sft.overflow)
        check_lengths(tokenized.counts, sft.max_length)
        progress(f"sft: pre-flight passed on {checked} rendered samples; {tokenized.counts['out']} of "
                 f"{tokenized.counts['in']} rows to train on ({tokenized.counts['dropped_too_long']} dropped as too long, "
                 f"{tokenized.counts['truncated']} truncated, {len(tokenized.rejects)} set aside)")
        _write_tokenized(run, tokenized)
        result = _fit(cfg, run, fp, address, progress)
        entry.update(tokenized.counts)
        entry.update(result)
        entry["rejected"] = stats.reasons(r["reason"] for r in tokenized.rejects)
        run.mark_done(STAGE, fp)
    progress(f"sft: {result['global_step']} steps, final loss {result['final_loss']}, model in {run.path(FINAL)}")
    return entry


def _write_tokenized(run: RunDir, tokenized) -> None:
    import pyarrow as pa

    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("assistant_masks", pa.list_(pa.int8()))])
    run.reset_stage(TOKENIZED)
    run.write_part(TOKENIZED, pa.Table.from_pylist(tokenized.rows, schema=schema), "part-00000.parquet")
    run.write_text("rejects/sft.jsonl", "".join(json.dumps(r) + "\n" for r in tokenized.rejects))


def _fit(cfg: PipelineConfig, run: RunDir, fp: str, address: str | None, progress) -> dict:
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from factory.runtime import cluster_has_gpu, init_ray
    from factory.sft.export import write_model_card

    init_ray(address)
    sft = cfg.sft
    use_gpu = sft.use_gpu if sft.use_gpu is not None else cluster_has_gpu()
    resources_per_worker = {"CPU": sft.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    resources_per_worker.update(cfg.cluster.pool_resources)  # issue 7: training workers land on the GPU pool
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"sft": sft.model_dump(), "run_uri": _absolute(run.uri), "fingerprint": fp, "use_gpu": use_gpu},
        scaling_config=ScalingConfig(num_workers=sft.num_workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker),
        run_config=RunConfig(
            name=f"train-{fp}",
            storage_path=_storage(run),
            checkpoint_config=CheckpointConfig(num_to_keep=sft.keep_checkpoints),
        ),
    )
    progress(f"sft: training {sft.model} on {sft.num_workers} worker(s) ({'GPU' if use_gpu else 'CPU'}), "
             f"checkpoints every {sft.save_steps} steps under {run.path(STAGE, f'train-{fp}')}")
    try:
        trainer.fit()
    except Exception as e:  # Ray wraps the worker's exception; its text is what the user needs
        raise TrainingFailed(f"sft: training failed: {e}") from e
    log = run.read_json(TRAIN_LOG)
    losses = [h["loss"] for h in log["log_history"] if "loss" in h]
    write_model_card(cfg, run, log)
    if sft.push_to_hub:
        from factory.sft.export import push_model

        progress(f"sft: pushed to {push_model(run.path(FINAL), sft.push_to_hub, sft.private)}")
    return {
        "global_step": log["global_step"],
        "resumed_from_step": log["resumed_from_step"],
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_runtime": log["train_runtime"],
        "trained_tokens": log["num_input_tokens_seen"],
        "workers": log["world_size"],
        "model": run.path(FINAL),
    }
