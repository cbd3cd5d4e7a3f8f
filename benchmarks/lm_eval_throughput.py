"""Requests/s of the `meap-bench` lm-eval adapter vs lm-eval's own `hf` model, in one run: the same
checkpoint, the same lm-eval requests (built once), the same batch size, both warmed up, weights loaded
before timing. Prints a table and saves JSON.

    python benchmarks/lm_eval_throughput.py                      # a small random Llama built here
    python benchmarks/lm_eval_throughput.py --checkpoint PATH --tasks meap_arc_mini,meap_boolq_mini
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOCAL_TASKS = REPO / "tasks" / "commonsense"
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def build_checkpoint(folder: Path, hidden: int, layers: int, vocab: int, seed: int = 0) -> Path:
    """A random Llama with a byte-level BPE trained on the local task texts (no [MASK], no padded rows:
    both models then score over the same vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [line for f in sorted(LOCAL_TASKS.glob("*.jsonl")) for line in f.read_text().splitlines()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 1),
                         num_key_value_heads=max(hidden // 128, 1), max_position_embeddings=1024,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def timed(fn, *args) -> tuple[float, float, object]:
    """Wall-clock and CPU seconds (this process, all threads) of one call: on a shared machine the CPU
    time is the steadier measure of work."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="HF model folder (default: build a random Llama)")
    parser.add_argument("--tasks", default="meap_arc_mini,meap_boolq_mini", help="lm-eval task names")
    parser.add_argument("--include-path", type=Path, default=LOCAL_TASKS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per model (best is reported)")
    parser.add_argument("--out", type=Path, default=Path("reports/lm_eval_throughput.json"))
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from meap_bench.backends.hf import HFBackend
    from meap_bench.backends.lm_eval_adapter import MeapBenchLM
    from meap_bench.config import Checkpoint

    workdir = tempfile.TemporaryDirectory()
    checkpoint = args.checkpoint or build_checkpoint(Path(workdir.name) / "ckpt", args.hidden, args.layers, args.vocab)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    manager = TaskManager(include_path=str(args.include_path), include_defaults=False)
    instances = []
    for task in manager.load(names)["tasks"].values():
        task.build_all_requests(rank=0, world_size=1)
        instances.extend(task.instances)
    instances = [i for i in instances if i.request_type == "loglikelihood"]

    ours = MeapBenchLM(HFBackend(Checkpoint(name="bench", path=str(checkpoint), dtype="float32",
                                            batch_size=args.batch_size), args.device))
    theirs = HFLM(pretrained=str(checkpoint), dtype="float32", batch_size=args.batch_size, device=args.device)
    ours.engine.model  # noqa: B018 - load the weights before timing, as HFLM does in its constructor
    torch.set_num_threads(torch.get_num_threads())
    models = {"lm-eval hf": theirs, "meap-bench adapter": ours}
    for lm in models.values():
        lm.loglikelihood(instances[:16], disable_tqdm=True)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    cpu_times: dict[str, list[float]] = {name: [] for name in models}
    outputs = {}
    for _ in range(args.rounds):  # alternate, so that a busy machine slows both alike
        for name, lm in models.items():
            seconds, cpu, outputs[name] = timed(lambda lm=lm: lm.loglikelihood(instances, disable_tqdm=True))
            times[name].append(seconds)
            cpu_times[name].append(cpu)
    results = {name: {"requests": len(instances), "seconds_each_round": [round(t, 3) for t in times[name]],
                      "cpu_seconds_each_round": [round(t, 3) for t in cpu_times[name]],
                      "seconds": round(min(times[name]), 3), "cpu_seconds": round(min(cpu_times[name]), 3),
                      "requests_per_s": round(len(instances) / min(times[name]), 1),
                      "requests_per_cpu_s": round(len(instances) / min(cpu_times[name]), 1), "outputs": outputs[name]}
               for name in models}
    a, b = results["meap-bench adapter"]["outputs"], results["lm-eval hf"]["outputs"]
    max_diff = max(abs(x[0] - y[0]) for x, y in zip(a, b, strict=True))
    ratio = results["meap-bench adapter"]["requests_per_s"] / results["lm-eval hf"]["requests_per_s"]
    cpu_ratio = results["meap-bench adapter"]["requests_per_cpu_s"] / results["lm-eval hf"]["requests_per_cpu_s"]
    for r in results.values():
        r.pop("outputs")
    params = sum(p.numel() for p in theirs.model.parameters())
    report = {"tasks": names, "batch_size": args.batch_size, "device": args.device, "checkpoint": str(checkpoint),
              "parameters": params, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(),
              "results": results, "speedup": round(ratio, 2), "speedup_cpu_time": round(cpu_ratio, 2),
              "max_abs_loglikelihood_diff": max_diff}
    print(f"{len(instances)} loglikelihood requests ({', '.join(names)}), batch size {args.batch_size}, "
          f"{params / 1e6:.1f}M parameters, {args.device}, {torch.get_num_threads()} threads")
    print(f"best of {args.rounds} alternating rounds\n| model | seconds | requests/s | CPU seconds | requests/CPU s |\n"
          f"|:--|--:|--:|--:|--:|")
    for name, r in results.items():
        print(f"| {name} | {r['seconds']:.2f} | {r['requests_per_s']:.1f} | {r['cpu_seconds']:.2f} "
              f"| {r['requests_per_cpu_s']:.1f} |")
    print(f"speedup: {ratio:.2f}x wall-clock, {cpu_ratio:.2f}x CPU time   "
          f"max |loglikelihood difference|: {max_diff:.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
