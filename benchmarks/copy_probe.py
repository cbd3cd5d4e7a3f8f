"""What a pair can copy from its context: per-token loss on the second half of the trainer's copy episodes
(random made-up words with 7-digit numbers, said twice; or a `key: value` list then lookups), split into
digit-group tokens and the rest; in the repetitions, the largest attention of any head from each predicting
position to its copy source (where an induction head looks); and teacher-forced needle exact match at short
lengths. A model that has learnt in-context copying has near-zero loss on every repeated token;
docs/default-pair.md uses this to show which tokens a twin cannot copy, and why. Held-out keys only. Prints a
table and saves JSON.

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

from meap_bench.train.tokenizer import digit_token_ids  # noqa: E402


def episodes(seed: int, n: int) -> list[tuple[str, str]]:
    """(first part, second part) of the trainer's own copy episodes (`synthetic.copy_episode`, held-out keys):
    the second part repeats or looks up the first."""
    from meap_bench.data import synthetic

    rng, out = random.Random(seed), []
    for _ in range(n):
        text = synthetic.copy_episode(rng, 40, split="heldout")
        cut = text.index("\n\n") if "\n\n" in text else text.index("\n")  # a lookup list, else a repetition
        out.append((text[:cut], text[cut:]))
    return out


def mean(sums: dict[str, list]) -> dict[str, float]:
    return {k: round(total / max(count, 1), 3) for k, (total, count) in sums.items()}


@torch.no_grad()
def copy_measures(
    model, tokenizer, texts: list[tuple[str, str]], digits: set[int]
) -> tuple[dict[str, float], dict[str, float]]:
    """One forward per episode (eager attention). Loss: mean loss of the second parts' tokens, digit groups and
    other tokens, and of the first parts (unpredictable). Attention, in the plain repetitions (`A` newline `A`):
    the largest attention any head of any layer gives from the position that predicts a second-half token to
    that token's first-half position (the copy source, where an induction head looks), mean over digit-group
    targets (`digits`: their token ids) and over the rest."""
    loss_sums = {"digits": [0.0, 0], "other": [0.0, 0], "first part": [0.0, 0]}
    attention_sums = {"digits": [0.0, 0], "other": [0.0, 0]}
    for first, second in texts:
        head = tokenizer(first, add_special_tokens=False)["input_ids"]
        ids = [tokenizer.bos_token_id] + head + tokenizer(second, add_special_tokens=False)["input_ids"]
        out = model(torch.tensor([ids]), output_attentions=True)
        logits = out.logits[0, :-1].float()
        losses = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none").tolist()
        for position, (target, loss) in enumerate(zip(ids[1:], losses, strict=True)):
            kind = "first part" if position < len(head) else "digits" if target in digits else "other"
            loss_sums[kind][0] += loss
            loss_sums[kind][1] += 1
        start = len(ids) - len(head)  # where a repetition's second copy begins
        if second[1:] != first or ids[start:] != head:  # a key: value list, not a repetition
            continue
        for j in range(1, len(head)):
            weight = max(a[0, :, start + j - 1, 1 + j].max().item() for a in out.attentions)
            kind = "digits" if head[j] in digits else "other"
            attention_sums[kind][0] += weight
            attention_sums[kind][1] += 1
    return mean(loss_sums), mean(attention_sums)


def main() -> None:
    from transformers import AutoModelForCausalLM

    from meap_bench.tokenization import load_tokenizer
    from meap_bench.train import corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", default=[str(REPO / "checkpoints" / n)
                                                               for n in ("tiny-ntp", "tiny-meap")])
    parser.add_argument("--lengths", default="48,96,192")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("copy_probe.json"))
    args = parser.parse_args()
    rows = []
    for path in args.checkpoints:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
        digits = digit_token_ids(tokenizer)
        losses, attention = copy_measures(model, tokenizer, episodes(0, args.episodes), digits)
        row = {"checkpoint": path, **{f"copy loss, {k}": v for k, v in losses.items()},
               **{f"attention to copy source, {k}": v for k, v in attention.items()}}
        norms = model.get_input_embeddings().weight[sorted(digits)].norm(dim=-1)
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
