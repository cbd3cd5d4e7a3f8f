"""Issue 12's GPU benchmark in one process, one checkpoint, one set of requests: bf16 matmul peak; a random
1.1B Llama (hidden 2048, 22 layers, Llama-2 tokenizer with [MASK], 32,064 rows) on a needle grid (2,048 /
4,096 / 8,192 / 16,000 tokens x 5 depths x 4 needles = 80 prompts, 16 new tokens, 5 scored answers each);
our harness (the runner's own chunk evaluation: generation then scoring) with each speed option, a naive loop
(one generate per prompt), lm-eval's `hf` model (generate_until); prefill FLOP/s at 16k against the peak; the
share of time in prefill, decode and scoring; a profile at 16k; the harness with cuDNN attention allowed; time vs
context length and grid size. The naive loop and lm-eval run with PyTorch's defaults. Writes JSON and a log
into $OUT (else ./bench-out), after every step, so a cut-off run keeps what it measured.

    bash benchmarks/gpu_suite.sh                  # on the GPU (see docs/performance.md for the device command)
    python benchmarks/gpu_suite.py --smoke        # a 2-layer model, short lengths, CPU: every code path, ~1 min
    python benchmarks/gpu_suite.py --cpu --budget 900   # the same ratios on CPU (4 x 256 model, 512-2048 tokens)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FULL = {"lengths": [2048, 4096, 8192, 16000], "depths": [0, 25, 50, 75, 100], "samples": 4, "hidden": 2048,
        "intermediate": 5632, "layers": 22, "heads": 32, "kv_heads": 4, "dtype": "bfloat16", "peak_n": 8192,
        "flops_length": 16000, "batch_size": 16}
SMOKE = {"lengths": [128, 256], "depths": [0, 50, 100], "samples": 2, "hidden": 64, "intermediate": 128,
         "layers": 2, "heads": 4, "kv_heads": 2, "dtype": "float32", "peak_n": 512, "flops_length": 256,
         "batch_size": 4}
CPU = {"lengths": [512, 1024, 2048], "depths": [0, 25, 50, 75, 100], "samples": 4, "hidden": 256, "intermediate": 688,
       "layers": 4, "heads": 8, "kv_heads": 4, "dtype": "float32", "peak_n": 2048, "flops_length": 2048,
       "batch_size": 8}  # the same suite at a size 2 CPU cores finish in minutes (the default pair's shape)
VARIANTS = {  # name -> HF backend speed options
    "plain": {"equal_length": False, "prefix_reuse": False, "static_cache": False},
    "equal-length": {"equal_length": True, "prefix_reuse": False, "static_cache": False},
    "equal-length + static cache": {"equal_length": True, "prefix_reuse": False, "static_cache": True},
    "equal-length + prefix reuse": {"equal_length": True, "prefix_reuse": True, "static_cache": False},
}


class Suite:
    """Results and log, written after every step; steps past the time budget are skipped (and said so)."""

    def __init__(self, out: Path, budget: float, device: torch.device, name: str = "gpu_suite",
                 only: set[str] | None = None) -> None:
        self.out, self.budget, self.device, self.began = out, budget, device, time.perf_counter()
        self.only = only  # optional steps to run (None: all)
        out.mkdir(parents=True, exist_ok=True)
        self.results: dict = {"command": " ".join(sys.argv), "skipped": []}
        self.json = out / f"{name}.json"
        self.log_file = open(out / f"{name}.log", "a", encoding="utf-8")  # noqa: SIM115

    def log(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.began:7.1f}s] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.began, 1)
        self.json.write_text(json.dumps(self.results, indent=2) + "\n")

    def step(self, name: str, fn: Callable[[], object], optional: bool = True) -> object:
        if optional and self.only is not None and name not in self.only:
            return None
        if optional and time.perf_counter() - self.began > self.budget:
            self.log(f"SKIPPED {name}: past the {self.budget:.0f} s budget")
            self.results["skipped"].append(name)
            self.save()
            return None
        self.log(f"start {name}")
        try:
            value = fn()
        except Exception as err:  # one broken step must not lose the others' figures
            self.log(f"FAILED {name}: {type(err).__name__}: {err}")
            self.results.setdefault("failed", {})[name] = f"{type(err).__name__}: {err}"
            self.save()
            if not optional:
                raise
            return None
        self.log(f"done {name}: {json.dumps(value, default=str)[:600]}")
        self.results[name] = value
        self.save()
        return value

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn: Callable[[], object]) -> tuple[float, object]:
        self.sync()
        began = time.perf_counter()
        value = fn()
        self.sync()
        return time.perf_counter() - began, value


def matmul_peak(suite: Suite, n: int, dtype: torch.dtype) -> dict:
    a = torch.randn(n, n, device=suite.device, dtype=dtype)
    b = torch.randn(n, n, device=suite.device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 10
    seconds, _ = suite.timed(lambda: [a @ b for _ in range(reps)])
    return {"n": n, "dtype": str(dtype), "tflops": round(2 * n ** 3 * reps / seconds / 1e12, 4)}


def build_checkpoint(size: dict, tokenizer_dir: Path, folder: Path, device: torch.device) -> dict:
    """A random Llama saved as a checkpoint folder, with the tokenizer (rows padded to a multiple of 64)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from meap_bench.tokenization import load_tokenizer

    tokenizer = load_tokenizer(str(tokenizer_dir))
    rows = (len(tokenizer) // 64 + 1) * 64  # padding rows, as MEAP checkpoints have: 32,064 for Llama-2 + [MASK]
    config = LlamaConfig(vocab_size=rows, hidden_size=size["hidden"], intermediate_size=size["intermediate"],
                         num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
                         num_key_value_heads=size["kv_heads"], max_position_embeddings=max(size["lengths"]) + 256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, size["dtype"]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    parameters = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    del model
    return {"parameters": parameters, "non_embedding_parameters": parameters - embedding, "vocab_rows": rows,
            "tokenizer_size": len(tokenizer), "config": {k: size[k] for k in
                                                          ("hidden", "intermediate", "layers", "heads", "kv_heads")}}


def needle_samples(tokenizer, max_length: int, lengths: list[int], depths: list[float], samples: int):
    """The needle task's own samples (noise haystack, 16 new tokens, gold + 4 distractors scored)."""
    from meap_bench.tasks import TASKS, ModelContext

    config = TASKS["needle"].config_model.model_validate(
        {"context_lengths": lengths, "depths": depths, "samples_per_cell": samples, "haystack": "noise",
         "max_new_tokens": 16, "distractors": 4})
    task = TASKS["needle"](config, seed=0, limit=None)
    found = [s for s in task.samples(ModelContext(tokenizer, max_length)) if s.prompt_ids is not None]
    return task, found


class Timed:
    """The backend as the runner sees it, with the seconds spent in generate and loglikelihood added up."""

    def __init__(self, backend, suite: Suite) -> None:
        self.backend, self.suite = backend, suite
        self.seconds = {"generate": 0.0, "loglikelihood": 0.0}

    def __getattr__(self, name: str):
        return getattr(self.backend, name)

    def generate(self, requests):
        seconds, out = self.suite.timed(lambda: self.backend.generate(requests))
        self.seconds["generate"] += seconds
        return out

    def loglikelihood(self, requests):
        seconds, out = self.suite.timed(lambda: self.backend.loglikelihood(requests))
        self.seconds["loglikelihood"] += seconds
        return out


def harness(suite: Suite, backend, task, samples, options: dict, new_tokens: int | None = None) -> dict:
    """The runner's chunk evaluation (`runner.evaluate_chunk`, CHUNK samples at a time, in task order) with
    the given speed options; seconds in total, per phase and per context length (a chunk's time split by its
    prompt tokens)."""
    from dataclasses import replace

    from meap_bench.runner import CHUNK, evaluate_chunk

    for option, value in options.items():
        setattr(backend, option, value)
    backend.store.clear()
    if new_tokens is not None:
        samples = [replace(s, max_new_tokens=new_tokens, choices=[]) for s in samples]
    timed = Timed(backend, suite)
    base = {"run": "gpu-suite", "checkpoint": backend.name, "fingerprint": backend.fingerprint, "backend": "hf",
            "capabilities": sorted(backend.capabilities), "objective": "", "pair": None, "task": task.name}
    per_length: dict[int, float] = {}
    outputs, scores = [], []
    began = time.perf_counter()
    for start in range(0, len(samples), CHUNK):
        chunk = samples[start:start + CHUNK]
        seconds, (records, _) = suite.timed(lambda c=chunk: evaluate_chunk(base, timed, task, c))
        tokens = sum(len(s.prompt_ids) for s in chunk)
        for s in chunk:
            per_length[s.cell["length"]] = per_length.get(s.cell["length"], 0.0) + seconds * len(s.prompt_ids) / tokens
        outputs += [r.output for r in records]
        scores += [r.scores for r in records]
    total = time.perf_counter() - began
    backend.store.clear()
    return {"seconds": round(total, 3), "generate_s": round(timed.seconds["generate"], 3),
            "loglikelihood_s": round(timed.seconds["loglikelihood"], 3),
            "per_length_s": {k: round(v, 3) for k, v in sorted(per_length.items())}, "prompts": len(samples),
            "options": dict(options), "outputs": outputs, "scores": scores}


def naive_loop(suite: Suite, model, tokenizer, samples) -> dict:
    """One `generate` per prompt, as a user without a harness would write it (greedy, 16 new tokens)."""
    per_length: dict[int, float] = {}
    outputs = []
    for s in samples:
        ids = torch.tensor([s.prompt_ids], device=model.device)
        seconds, out = suite.timed(lambda i=ids, n=s.max_new_tokens: model.generate(
            input_ids=i, attention_mask=torch.ones_like(i), max_new_tokens=n, do_sample=False,
            pad_token_id=tokenizer.eos_token_id))
        per_length[s.cell["length"]] = per_length.get(s.cell["length"], 0.0) + seconds
        outputs.append(out[0, ids.shape[1]:].tolist())
    return {"seconds": round(sum(per_length.values()), 3), "prompts": len(samples),
            "per_length_s": {k: round(v, 3) for k, v in sorted(per_length.items())}, "token_ids": outputs}


def lm_eval_generate(suite: Suite, model, tokenizer, samples, batch_size: int) -> dict:
    """lm-eval's own `hf` model (HFLM, over the same loaded weights) through generate_until, on the same
    prompts as text (lm-eval tokenises them itself), stop at a newline, 16 new tokens."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
              max_length=model.config.max_position_embeddings)
    instances = [Instance("generate_until", {}, (tokenizer.decode(s.prompt_ids, skip_special_tokens=True), {
        "until": ["\n"], "max_gen_toks": s.max_new_tokens, "do_sample": False}), i) for i, s in enumerate(samples)]
    seconds, texts = suite.timed(lambda: lm.generate_until(instances, disable_tqdm=True))
    return {"seconds": round(seconds, 3), "prompts": len(samples), "batch_size": batch_size, "texts": texts}


@torch.inference_mode()
def prefill_flops(suite: Suite, model, length: int, peak: float | None) -> dict:
    """One forward over `length` tokens (batch 1, logits at the last position only): FLOPs = 2 x non-embedding
    parameters x tokens + the attention products (QK^T and AV: 4 x layers x hidden per causal query-key
    pair, length(length+1)/2 pairs) + the last position's output projection."""
    config = model.config
    ids = torch.randint(0, config.vocab_size, (1, length), device=model.device)
    model(input_ids=ids, use_cache=False, logits_to_keep=1)  # warm-up
    reps = 3
    seconds, _ = suite.timed(lambda: [model(input_ids=ids, use_cache=False, logits_to_keep=1) for _ in range(reps)])
    seconds /= reps
    embedding = model.get_input_embeddings().weight.numel()
    dense = sum(p.numel() for p in model.parameters()) - embedding - model.get_output_embeddings().weight.numel()
    flops = (2 * dense * length + 4 * config.num_hidden_layers * config.hidden_size * length * (length + 1) / 2
             + 2 * model.get_output_embeddings().weight.numel())
    tflops = flops / seconds / 1e12
    return {"length": length, "seconds": round(seconds, 4), "tokens_per_s": round(length / seconds),
            "tflops": round(tflops, 4), "share_of_peak": round(tflops / peak, 3) if peak else None}


def profile(suite: Suite, backend, task, samples, options: dict, rows: int = 15) -> dict:
    """Where the harness's time goes at the longest length: its prompts under torch.profiler, the operators
    with the most device time (CPU time on CPU), and the wall time of the profiled run."""
    from torch.profiler import ProfilerActivity

    longest = max(s.cell["length"] for s in samples)
    chosen = [s for s in samples if s.cell["length"] == longest]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if suite.device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        run = harness(suite, backend, task, chosen, options)
    key = "self_device_time_total" if suite.device.type == "cuda" else "self_cpu_time_total"
    averages = prof.key_averages()
    suite.log("profile:\n" + averages.table(sort_by=key, row_limit=rows, max_name_column_width=48))
    events = sorted(averages, key=lambda e: -getattr(e, key))
    top = [{"op": e.key, "calls": e.count, "self_ms": round(getattr(e, key) / 1e3, 2)} for e in events[:rows]]
    return {"length": longest, "prompts": len(chosen), "seconds_profiled": run["seconds"],
            "generate_s": run["generate_s"], "loglikelihood_s": run["loglikelihood_s"], "top": top}


def agreement(reference: list, other: list) -> float:
    return round(sum(a == b for a, b in zip(reference, other, strict=True)) / max(len(reference), 1), 3)


def score_difference(reference: list[dict], other: list[dict]) -> float:
    """The largest absolute difference between two runs' score values (teacher-forced logprobs, ranks)."""
    return max((abs(a[k] - b[k]) for a, b in zip(reference, other, strict=True) for k in a
                if isinstance(a[k], (int, float)) and isinstance(b.get(k), (int, float))), default=0.0)


def summary(results: dict) -> list[dict]:
    """The ratios the issue asks for, one row each."""
    rows = []
    naive = (results.get("naive loop") or {}).get("seconds")
    default = results.get("harness (default options)") or {}
    for name, value in results.items():
        if isinstance(value, dict) and "seconds" in value and ("options" in value or name in ("naive loop",
                                                                                              "lm-eval hf")):
            row = {"path": name, "prompts": value.get("prompts"), "seconds": value["seconds"],
                   "generate s": value.get("generate_s", value["seconds"]), "scoring s": value.get("loglikelihood_s"),
                   "vs naive x": round(naive / value["seconds"], 2) if naive else None,
                   "generation vs naive x": round(naive / value.get("generate_s", value["seconds"]), 2) if naive
                   else None}
            rows.append(row)
    split = results.get("time split (default options)") or {}
    flops = results.get("prefill flops") or {}
    rows.append({"path": "GOALS", "prompts": None, "seconds": None,
                 "generate s": f"prefill {flops.get('share_of_peak')} of peak (goal >= 0.4)",
                 "scoring s": f"decode+scoring {split.get('decode_and_scoring_share')} (goal <= 0.333)",
                 "vs naive x": f"{round(naive / default['seconds'], 2) if naive and default else None} (goal >= 3)",
                 "generation vs naive x": None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model and lengths (CPU): checks every path")
    parser.add_argument("--cpu", action="store_true", help="a 4-layer x 256 model at 512-2048 tokens: CPU figures")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench-out"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds after which optional steps are skipped")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer folder (default: .whl/tokenizer, else ../shared/data/tokenizers/meap-llama)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", default=None, help="comma-separated names of the optional steps (default: all)")
    args = parser.parse_args()
    size = dict(SMOKE if args.smoke else CPU if args.cpu else FULL)
    if args.batch_size:
        size["batch_size"] = args.batch_size
    device = torch.device(args.device)
    suite = Suite(args.out, args.budget, device, only=set(args.steps.split(",")) if args.steps else None)
    tokenizer_dir = args.tokenizer or next(
        (p for p in (REPO / ".whl" / "tokenizer", REPO.parent / "shared" / "data" / "tokenizers" / "meap-llama",
                     REPO / "shared" / "data" / "tokenizers" / "meap-llama") if (p / "tokenizer.json").exists()), None)
    if tokenizer_dir is None:
        raise SystemExit("no tokenizer: run benchmarks/gpu_prepare.sh first, or pass --tokenizer")
    import transformers

    suite.results["machine"] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "size": size, "tokenizer": str(tokenizer_dir)}
    suite.save()
    dtype = getattr(torch, size["dtype"])
    peak = suite.step("matmul peak", lambda: matmul_peak(suite, size["peak_n"], dtype if device.type == "cuda"
                                                          else torch.float32))
    folder = Path(tempfile.mkdtemp(prefix="gpu-suite-"))
    suite.step("model", lambda: build_checkpoint(size, tokenizer_dir, folder, device), optional=False)

    from meap_bench.backends.base import GenRequest, LLRequest
    from meap_bench.backends.hf import DEFAULT_OPTIONS, HFBackend
    from meap_bench.config import Checkpoint

    checkpoint = Checkpoint(name="llama-random", path=str(folder), objective="ntp", dtype=size["dtype"],
                            batch_size=size["batch_size"], max_length=max(size["lengths"]) + 256)
    backend = HFBackend(checkpoint, str(device))
    default_options = backend.options()
    model, tokenizer = backend.model, backend.tokenizer
    task, samples = needle_samples(tokenizer, backend.max_length, size["lengths"], size["depths"], size["samples"])
    suite.results["grid"] = {"lengths": size["lengths"], "depths": size["depths"], "needles": size["samples"],
                             "prompts": len(samples), "prompt_tokens": sum(len(s.prompt_ids) for s in samples),
                             "choices_per_prompt": len(samples[0].choices), "new_tokens": samples[0].max_new_tokens,
                             "batch_size": size["batch_size"], "default_options": default_options,
                             "default_options_declared": DEFAULT_OPTIONS}

    def warm_up() -> dict:
        short = samples[0].prompt_ids[:64]
        for options in VARIANTS.values():
            for option, value in options.items():
                setattr(backend, option, value)
            backend.generate([GenRequest(short, 4), GenRequest(short[:-1] + [short[0]], 4)])
            backend.loglikelihood([LLRequest(short, short[:3]), LLRequest(short, short[3:5])])
            backend.store.clear()
        model.generate(input_ids=torch.tensor([short], device=model.device), max_new_tokens=2, do_sample=False,
                       pad_token_id=tokenizer.eos_token_id)
        return {"ok": True}

    suite.step("warm-up", warm_up, optional=False)
    main_run = suite.step("harness (default options)", lambda: harness(suite, backend, task, samples, default_options))
    naive = suite.step("naive loop", lambda: naive_loop(suite, model, tokenizer, samples))
    flops = suite.step("prefill flops", lambda: prefill_flops(suite, model, size["flops_length"],
                                                              (peak or {}).get("tflops")))

    def split() -> dict:
        """Prefill = the harness with 1 new token and no scoring; decode = generation beyond that."""
        one = harness(suite, backend, task, samples, default_options, new_tokens=1)
        prefill = one["generate_s"]
        full = main_run or {}
        decode = max(full.get("generate_s", 0.0) - prefill, 0.0)
        total = full.get("seconds") or 0.0
        return {"prefill_s": round(prefill, 3), "decode_s": round(decode, 3),
                "scoring_s": full.get("loglikelihood_s"), "total_s": total,
                "decode_and_scoring_share": round((decode + full.get("loglikelihood_s", 0.0)) / total, 3)
                if total else None}

    suite.step("time split (default options)", split)
    suite.step("profile (longest length, default options)", lambda: profile(suite, backend, task, samples,
                                                                            default_options))
    suite.step("lm-eval hf", lambda: lm_eval_generate(suite, model, tokenizer, samples, size["batch_size"]))

    def grid_sizes() -> list[dict]:
        rows = []
        for needles in [n for n in (1, 2) if n < size["samples"]]:
            subset = [s for s in samples if int(s.sample_id.rsplit("-S", 1)[1]) < needles]
            run = harness(suite, backend, task, subset, default_options)
            rows.append({"needles": needles, "prompts": len(subset), "seconds": run["seconds"]})
        if main_run:
            rows.append({"needles": size["samples"], "prompts": len(samples), "seconds": main_run["seconds"]})
        return rows

    def with_cudnn_attention() -> dict:
        """The default harness with cuDNN's attention kernel allowed again (the backend leaves it out,
        `hf.ATTENTION_KERNELS`): what that choice is worth, in the same run."""
        from torch.nn.attention import SDPBackend

        from meap_bench.backends import hf

        kernels = hf.ATTENTION_KERNELS
        hf.ATTENTION_KERNELS = [*kernels, SDPBackend.CUDNN_ATTENTION]
        try:
            return harness(suite, backend, task, samples, default_options)
        finally:
            hf.ATTENTION_KERNELS = kernels

    def variant(name: str) -> None:
        if VARIANTS[name] == default_options and main_run:
            suite.results[f"harness ({name})"] = {**main_run, "same_as": "harness (default options)"}
        else:
            suite.step(f"harness ({name})", lambda: harness(suite, backend, task, samples, VARIANTS[name]))

    # most wanted first, since steps past the budget are skipped
    suite.step("harness (default options with cuDNN attention allowed)", with_cudnn_attention)
    variant("equal-length")  # prefix reuse off
    suite.step("time vs grid size", grid_sizes)
    for name in ("plain", "equal-length + static cache", "equal-length + prefix reuse"):
        variant(name)
    reference = (suite.results.get("harness (plain)") or {})
    for value in list(suite.results.values()):
        if isinstance(value, dict) and "options" in value and reference.get("outputs"):
            value["outputs_equal_plain"] = agreement(reference["outputs"], value["outputs"])
            value["scores_max_abs_diff_vs_plain"] = score_difference(reference["scores"], value["scores"])
    suite.results["lengths"] = {length: {"naive s": (naive or {}).get("per_length_s", {}).get(length),
                                         "harness s": (main_run or {}).get("per_length_s", {}).get(length)}
                                for length in size["lengths"]}
    suite.results["summary"] = summary(suite.results)
    for value in suite.results.values():  # the outputs were for the comparisons above; keep the JSON small
        if isinstance(value, dict):
            for key in ("outputs", "scores", "token_ids", "texts"):
                value.pop(key, None)
    suite.save()
    from tabulate import tabulate

    table = tabulate(suite.results["summary"], headers="keys", tablefmt="github")
    suite.log("\n" + table)
    suite.log(f"lengths: {json.dumps(suite.results['lengths'])}")
    suite.log(f"flops: {json.dumps(flops)}; peak: {json.dumps(peak)}")
    suite.log(f"saved {suite.json}")


if __name__ == "__main__":
    main()
