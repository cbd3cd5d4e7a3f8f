"""Needle-grid generation on the HF backend, one process, same checkpoint, same requests: the naive loop
(one generate per prompt), the plain batched path, equal-length batching, prefix reuse on top, and lm-eval's
`hf` model through generate_until; over several context lengths. Outputs are checked equal to the naive
loop's. Prints a table with ratios and saves JSON.

    python benchmarks/hf_generation.py                       # the embedded tiny MEAP checkpoint, CPU
    python benchmarks/hf_generation.py --checkpoint PATH --lengths 1024,4096 --depths 11 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def needle_requests(tokenizer, max_length: int, length: int, depths: int, samples: int):
    from meap_bench.backends.base import GenRequest
    from meap_bench.tasks import TASKS, ModelContext

    config = TASKS["needle"].config_model.model_validate(
        {"context_lengths": [length], "depths": [100 * i / (depths - 1) for i in range(depths)],
         "samples_per_cell": samples, "haystack": "noise", "distractors": 0})
    task = TASKS["needle"](config, seed=0, limit=None)
    found = [s for s in task.samples(ModelContext(tokenizer, max_length)) if s.prompt_ids is not None]
    return [GenRequest(s.prompt_ids, s.max_new_tokens, s.stop) for s in found]


def timed(fn, *args):
    began = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - began, out


def lm_eval_hf(path: str, tokenizer, requests, batch_size: int, device: str):
    """lm-eval's own `hf` model on the same prompts (as text: lm-eval tokenises them itself)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model = HFLM(pretrained=path, batch_size=batch_size, device=device, dtype="float32")
    instances = [Instance("generate_until", {}, (tokenizer.decode(r.prompt_ids), {
        "until": list(r.stop), "max_gen_toks": r.max_new_tokens, "do_sample": False}), i)
        for i, r in enumerate(requests)]
    return lambda: model.generate_until(instances)


def main() -> None:
    from meap_bench.backends.base import GenRequest
    from meap_bench.backends.hf import HFBackend
    from meap_bench.config import Checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "tiny-meap"))
    parser.add_argument("--lengths", default="256,512,1024")
    parser.add_argument("--depths", type=int, default=11)
    parser.add_argument("--samples", type=int, default=2, help="needle samples per cell")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-lm-eval", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("reports/hf_generation.json"))
    args = parser.parse_args()
    checkpoint = Checkpoint(name="bench", path=args.checkpoint, objective="meap", dtype="float32",
                            batch_size=args.batch_size)
    paths = {
        "naive loop": HFBackend(checkpoint.model_copy(update={"batch_size": 1}), args.device, False, False),
        "batched (plain)": HFBackend(checkpoint, args.device, equal_length=False, prefix_reuse=False),
        "equal-length": HFBackend(checkpoint, args.device, equal_length=True, prefix_reuse=False),
        "equal-length + prefix reuse": HFBackend(checkpoint, args.device, equal_length=True, prefix_reuse=True),
    }
    for backend in paths.values():
        backend.generate([GenRequest([5, 6, 7], 2)])  # load weights, warm up
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        naive = paths["naive loop"]
        requests = needle_requests(naive.tokenizer, naive.max_length, length, args.depths, args.samples)
        base_seconds, reference = timed(naive.generate, requests)
        row = {"length": length, "prompts": len(requests), "naive loop s": round(base_seconds, 2)}
        for name, backend in list(paths.items())[1:]:
            seconds, out = timed(backend.generate, requests)
            assert out == reference, f"{name}: outputs differ from the naive loop"
            row[f"{name} s"] = round(seconds, 2)
            row[f"{name} x"] = round(base_seconds / seconds, 2)
        if not args.no_lm_eval:
            run = lm_eval_hf(args.checkpoint, naive.tokenizer, requests, args.batch_size, args.device)
            seconds, _ = timed(run)
            row["lm-eval hf s"] = round(seconds, 2)
            row["prefix reuse vs lm-eval x"] = round(seconds / row["equal-length + prefix reuse s"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    from tabulate import tabulate

    print(tabulate(rows, headers="keys", tablefmt="github"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                    "torch": torch.__version__, "command": " ".join(sys.argv), "rows": rows},
                                   indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
