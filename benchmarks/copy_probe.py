"""What a pair can copy from its context: per-token loss on the second half of copy episodes (random made-up
words with 7-digit numbers, said twice; a `key: value` list then lookups), split into digit-group tokens and
the rest, and teacher-forced needle exact match at short lengths. A model that has learnt in-context copying
has near-zero loss on every repeated token; docs/default-pair.md uses this to show which tokens a twin cannot
copy. Held-out keys only. Prints a table and saves JSON.

    python benchmarks/copy_probe.py                                  # the embedded default pair
    python benchmarks/copy_probe.py --checkpoints A B --out probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def episodes(seed: int, n: int) -> list[tuple[str, str]]:
    """(first part, second part) texts; the second part repeats or looks up the first."""
    from meap_bench.data import synthetic

    rng, keys, out = random.Random(seed), synthetic.magic_keys("heldout"), []
    for _ in range(n):
        words = [synthetic.magic_value(rng) if rng.random() < 0.3 else rng.choice(keys) for _ in range(30)]
        out.append((" ".join(words), "\n" + " ".join(words)))
        pairs = [(k, synthetic.magic_value(rng)) for k in rng.sample(keys, 8)]
        out.append(("\n".join(f"{k}: {v}" for k, v in pairs), "\n\n" + "\n".join(f"{k}? {v}" for k, v in pairs[:4])))
    return out


@torch.no_grad()
def copy_losses(model, tokenizer, texts: list[tuple[str, str]]) -> dict[str, float]:
    """Mean loss of the second parts' tokens: digit groups, other tokens; and of the first parts (unpredictable)."""
    sums = {"digits": [0.0, 0], "other": [0.0, 0], "first part": [0.0, 0]}
    for first, second in texts:
        head = tokenizer(first, add_special_tokens=False)["input_ids"]
        ids = [tokenizer.bos_token_id] + head + tokenizer(second, add_special_tokens=False)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
        losses = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none").tolist()
        for position, (target, loss) in enumerate(zip(ids[1:], losses, strict=True)):
            if position < len(head):
                kind = "first part"
            else:
                kind = "digits" if tokenizer.decode([target]).strip().isdigit() else "other"
            sums[kind][0] += loss
            sums[kind][1] += 1
    return {k: round(total / max(count, 1), 3) for k, (total, count) in sums.items()}


def main() -> None:
    from transformers import AutoModelForCausalLM

    from meap_bench.tokenization import load_tokenizer
    from meap_bench.train import corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", default=[str(REPO / "checkpoints" / n)
                                                               for n in ("tiny-ntp", "tiny-meap")])
    parser.add_argument("--lengths", default="48,96,192")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("copy_probe.json"))
    args = parser.parse_args()
    rows = []
    for path in args.checkpoints:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        row = {"checkpoint": path, **{f"copy loss, {k}": v for k, v in
                                      copy_losses(model, tokenizer, episodes(0, args.episodes)).items()}}
        digits = [i for t, i in tokenizer.get_vocab().items() if len(t.lstrip("Ġ")) == 3 and t.lstrip("Ġ").isdigit()]
        norms = model.get_input_embeddings().weight[digits].norm(dim=-1)
        row["digit-group embedding norm"] = round(norms.mean().item(), 3)
        for length in (int(n) for n in args.lengths.split(",")):
            em, loss = corpus.exact_match(model, corpus.heldout_needles(tokenizer, length, 40), torch.device("cpu"))
            row[f"needle EM {length}"], row[f"needle answer loss {length}"] = em, round(loss, 3)
        rows.append(row)
    from tabulate import tabulate

    print(tabulate(rows, headers="keys", tablefmt="github"))
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
