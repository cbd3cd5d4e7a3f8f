"""Training throughput of NTP vs MEAP on one recipe, in one run, and model FLOPs utilisation.

    python benchmarks/train_throughput.py --recipe tiny-pair --steps 150 [--set train.batch_size=32]

Each twin trains `--steps` steps through the real trainer (data loading included); the first `--skip`
steps are dropped. MFU = 6 x parameters x tokens/s / the matmul peak measured here (bf16 on CUDA,
fp32 on CPU), so attention FLOPs are not counted. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from meap_bench.train.recipe import load_recipe
from meap_bench.train.run import make_trainer


def matmul_peak(device: str) -> float:
    """Achieved FLOP/s of a large square matmul (bf16 on CUDA, fp32 on CPU)."""
    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 20 if device == "cuda" else 5
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available() and not args.use_cpu:
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


def measure(recipe, objective: str, device: str | None, skip: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trainer, info = make_trainer(recipe, objective, Path(tmp) / objective, device)
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    gaps = [b - a for a, b in zip(timer.ends[skip:], timer.ends[skip + 1 :], strict=False)]
    params = sum(p.numel() for p in trainer.model.parameters())
    step = statistics.median(gaps)
    return {
        "objective": objective,
        "step_s": step,
        "step_mean_s": statistics.mean(gaps),
        "tokens_per_s": info["tokens_per_step"] / step,
        "params": params,
        "steps_timed": len(gaps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="tiny-pair")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--skip", type=int, default=10)
    ap.add_argument("--device", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--json", default="reports/train_throughput.json")
    a = ap.parse_args()
    sets = [
        *a.sets,
        f"train.steps={a.steps}",
        "train.eval_every=0",
        "train.save_every=1000000",
        "train.log_every=1000000",
    ]
    recipe = load_recipe(Path("train") / f"{a.recipe}.yaml", sets=sets)
    rows = [measure(recipe, obj, a.device, a.skip) for obj in ("ntp", "meap")]
    device = "cuda" if torch.cuda.is_available() and a.device != "cpu" else "cpu"
    peak = matmul_peak(device)
    for r in rows:
        r["mfu"] = 6 * r["params"] * r["tokens_per_s"] / peak
    result = {
        "recipe": a.recipe,
        "sets": a.sets,
        "steps": a.steps,
        "skip": a.skip,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "matmul_peak_tflops": peak / 1e12,
        "rows": rows,
        "meap_over_ntp_step_time": rows[1]["step_s"] / rows[0]["step_s"],
    }
    print(f"device: {result['device']}   matmul peak: {peak / 1e12:.2f} TFLOP/s   params: {rows[0]['params']:,}")
    print(f"{'objective':<10}{'step ms':>10}{'tokens/s':>12}{'MFU':>9}")
    for r in rows:
        print(f"{r['objective']:<10}{1000 * r['step_s']:>10.2f}{r['tokens_per_s']:>12,.0f}{100 * r['mfu']:>8.2f}%")
    print(f"MEAP / NTP step time: {result['meap_over_ntp_step_time']:.3f}")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
