"""Peak memory and time of one forward pass at long context: a plain forward, the HF backend's attention
summaries (the `attention` task's path), and the alternative they avoid, eager attention returning every
layer's full attention maps (`output_attentions=True`). Each measurement runs in a fresh process; the
figure is the peak resident memory during the forward minus the resident memory just before it.

    python benchmarks/attention_memory.py                          # random Llama, lengths 1024 2048 4096
    python benchmarks/attention_memory.py --lengths 8192 --hidden 512 --layers 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
MODES = ("forward", "summaries", "summaries-8-queries", "eager-maps")


def build_checkpoint(folder: Path, hidden: int, layers: int, heads: int, max_length: int) -> None:
    """A random Llama (fp32) and the test suite's kind of byte-level BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["attention at long context " * 50], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=max(heads // 2, 1),
                         max_position_embeddings=max_length, bos_token_id=0, eos_token_id=1)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)


def rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child(mode: str, folder: str, length: int) -> dict:
    """One measurement in this (fresh) process."""
    import torch
    from transformers import AutoModelForCausalLM

    from meap_bench.backends.base import AttnRequest
    from meap_bench.backends.hf import HFBackend
    from meap_bench.config import Checkpoint

    ids = torch.randint(2, 4096, (length,), generator=torch.Generator().manual_seed(0)).tolist()
    spans = {"target": (length // 2, length // 2 + 20), "context": (10, length - 30)}
    if mode == "eager-maps":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        run = lambda: model(input_ids=torch.tensor([ids]), output_attentions=True, logits_to_keep=1)  # noqa: E731
    else:
        backend = HFBackend(Checkpoint(name="b", path=folder, objective="ntp"), device="cpu")
        model = backend.model
        queries = tuple(range(length - 8, length)) if mode == "summaries-8-queries" else (length - 1,)
        if mode == "forward":
            run = lambda: model(input_ids=torch.tensor([ids]), logits_to_keep=1, use_cache=False)  # noqa: E731
        else:
            run = lambda: backend.attention([AttnRequest(ids, queries, spans)])  # noqa: E731
    before = rss_kib()
    began = time.perf_counter()
    with torch.inference_mode():
        out = run()
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del out
    return {"mode": mode, "length": length, "extra_peak_mib": round((peak - before) / 1024, 1),
            "seconds": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/attention_memory.json"))
    parser.add_argument("--child", nargs=3, metavar=("MODE", "FOLDER", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build_checkpoint(Path(tmp), args.hidden, args.layers, args.heads, max(args.lengths))
        for length in args.lengths:
            for mode in MODES:
                out = subprocess.run([sys.executable, __file__, "--child", mode, tmp, str(length)],
                                     capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"{length:>6} {mode:<20} +{rows[-1]['extra_peak_mib']:>8.1f} MiB {rows[-1]['seconds']:>7.2f} s")
    args.out.write_text(json.dumps({"hidden": args.hidden, "layers": args.layers, "heads": args.heads,
                                    "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
