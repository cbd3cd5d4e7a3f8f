"""How much vLLM's full-vocabulary normalisation would change a checkpoint's scores, measured on the HF
backend: the needle task's gold and distractor answers scored both ways on the same forward pass. Prints a
table and saves JSON.

    python benchmarks/renormalisation.py                                  # the embedded tiny pair
    python benchmarks/renormalisation.py --checkpoints checkpoints.yaml --samples 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@torch.inference_mode()
def both_ways(backend, prompt: list[int], choice: list[int]) -> tuple[float, float]:
    """(real-vocabulary, full-vocabulary) summed log p(choice | prompt), in float64: the difference is
    -log(1 - p(excluded ids)) per token, below float32's resolution for a model that barely predicts them."""
    ids = torch.tensor([prompt + choice[:-1]], device=backend.device)
    logits = backend.model(input_ids=ids).logits[0, len(prompt) - 1:].double()
    target = torch.tensor(choice, device=logits.device)[:, None]
    real = torch.log_softmax(logits.masked_fill(backend.excluded, float("-inf")), -1).gather(-1, target).sum().item()
    full = torch.log_softmax(logits, -1).gather(-1, target).sum().item()
    return real, full


def measure(checkpoint, samples: int, lengths: list[int]) -> dict:
    from meap_bench.backends.hf import HFBackend
    from meap_bench.tasks import TASKS, ModelContext

    backend = HFBackend(checkpoint, device="cpu")
    config = TASKS["needle"].config_model.model_validate(
        {"context_lengths": lengths, "depths": [0, 50, 100], "samples_per_cell": samples, "haystack": "noise"})
    task = TASKS["needle"](config, seed=0, limit=None)
    shifts, flips, n = [], 0, 0
    for sample in task.samples(ModelContext(backend.tokenizer, backend.max_length)):
        if sample.prompt_ids is None or not sample.choices:
            continue
        scored = [both_ways(backend, sample.prompt_ids, c) for c in sample.choices]
        shifts += [real - full for real, full in scored]
        flips += max(range(len(scored)), key=lambda i: scored[i][0]) != max(range(len(scored)),
                                                                             key=lambda i: scored[i][1])
        n += 1
    shift = torch.tensor(shifts, dtype=torch.float64)
    return {"checkpoint": checkpoint.name, "excluded_ids": len(backend.excluded_ids), "samples": n,
            "choices": len(shifts), "mean_shift_nats": float(f"{shift.mean().item():.3g}"),
            "max_shift_nats": float(f"{shift.max().item():.3g}"), "ranking_changed": flips}


def main() -> None:
    from meap_bench.config import load_checkpoints

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, default=REPO / "checkpoints.yaml")
    parser.add_argument("--samples", type=int, default=10, help="needle samples per cell")
    parser.add_argument("--lengths", default="128,256")
    parser.add_argument("--out", type=Path, default=Path("reports/renormalisation.json"))
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    rows = [measure(c, args.samples, lengths) for c in load_checkpoints(args.checkpoints)]
    from tabulate import tabulate

    print(tabulate(rows, headers="keys", tablefmt="github"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                                    "command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
