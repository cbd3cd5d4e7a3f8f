"""Needle-grid time vs context length and vs grid size through the harness (the runner's chunk evaluation:
generation, then the gold and distractor answers scored), on a checkpoint from checkpoints.yaml or a folder,
with the HF backend's default speed options for the device. Prints a table and saves JSON.

    python benchmarks/grid_scaling.py                                   # tiny-meap, CPU, 256..1024 tokens
    python benchmarks/grid_scaling.py --checkpoint PATH --lengths 2048,4096,8192,16000 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from gpu_suite import REPO, Suite, harness, needle_samples  # noqa: E402


def main() -> None:
    from meap_bench.backends.hf import HFBackend
    from meap_bench.config import Checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "tiny-meap"))
    parser.add_argument("--lengths", default="256,512,1024")
    parser.add_argument("--depths", default="0,25,50,75,100")
    parser.add_argument("--needles", default="1,2,4", help="grid sizes: needles per cell")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    depths = [float(x) for x in args.depths.split(",")]
    needles = sorted(int(x) for x in args.needles.split(","))
    checkpoint = Checkpoint(name="bench", path=args.checkpoint, objective="meap", batch_size=args.batch_size,
                            max_length=max(lengths) + 64)
    suite = Suite(args.out, budget=float("inf"), device=torch.device(args.device), name="grid_scaling")
    backend = HFBackend(checkpoint, args.device)
    options = backend.options()
    task, samples = needle_samples(backend.tokenizer, backend.max_length, lengths, depths, needles[-1])
    backend.generate([backend_request(samples[0].prompt_ids[:32])])  # load the weights outside the timing
    suite.results["machine"] = {"device": args.device, "processor": platform.processor() or platform.machine(),
                                "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                                "load_average": os.getloadavg(), "checkpoint": args.checkpoint, "options": options}
    rows = []
    for count in needles:
        subset = [s for s in samples if int(s.sample_id.rsplit("-S", 1)[1]) < count]
        run = suite.step(f"{count} needles", lambda s=subset: harness(suite, backend, task, s, options), optional=False)
        tokens = sum(len(s.prompt_ids) for s in subset)
        rows.append({"needles per cell": count, "prompts": len(subset), "prompt tokens": tokens,
                     "seconds": run["seconds"], "generate s": run["generate_s"], "scoring s": run["loglikelihood_s"],
                     "prompt tokens/s": round(tokens / run["seconds"]),
                     **{f"{length} s": run["per_length_s"].get(length) for length in lengths}})
    suite.results["rows"] = rows
    for value in suite.results.values():
        if isinstance(value, dict):
            for key in ("outputs", "scores"):
                value.pop(key, None)
    suite.save()
    from tabulate import tabulate

    print(tabulate(rows, headers="keys", tablefmt="github"))
    print(f"saved {suite.json}")


def backend_request(ids: list[int]):
    from meap_bench.backends.base import GenRequest

    return GenRequest(ids, 2)


if __name__ == "__main__":
    main()
