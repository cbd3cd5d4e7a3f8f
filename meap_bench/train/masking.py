"""MEAP's masking of pre-training inputs, as a data collator.

MEAP replaces a fraction P of the *input* positions with `[MASK]`; the labels stay the clean tokens, so
the loss is ordinary next-token cross-entropy (the model shifts labels by one). P = 0 is plain NTP.

* per-sequence (paper): every row gets its own `int(L * P)` positions, drawn from `range(0, L - 1)`
  (the last input predicts nothing, so masking it would be wasted) with a generator seeded by
  (seed, example index): the same example always gets the same mask, which makes resume exact.
* official (scitix/MEAP code, `MEAP-Pretain/pretrained/meap_1b.py` `train`): every row of an optimizer
  step shares the same columns, drawn with Python's `random` re-seeded to `50 + step % 51` (a run only ever
  sees 51 patterns): `max(1, int(B * P))` of `range(0, B - 1)`, where B = L - 1 is the official block size
  (its inputs are the first B tokens of a B + 1 token row; our rows of L tokens carry the last target).

The optimizer step is recovered from the example index (`idx // global_batch`), which holds because the
trainer reads the corpus in order (see run.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


def per_sequence_positions(length: int, ratio: float, seed: int, idx: int) -> torch.Tensor:
    """`int(length * ratio)` distinct positions of one row, sorted, from range(0, length - 1)."""
    k = int(length * ratio)
    gen = torch.Generator().manual_seed((seed * 1_000_003 + idx) % (2**63 - 1))
    return torch.randperm(length - 1, generator=gen)[:k].sort().values


def official_positions(step: int, length: int, ratio: float) -> list[int]:
    """The official code's shared columns for an optimizer step (51 distinct patterns) in rows of `length`
    tokens: the official block size is `length - 1`."""
    block = length - 1
    rnd = random.Random(50 + step % 51)
    return sorted(rnd.sample(range(0, block - 1), max(1, int(block * ratio))))


@dataclass
class MeapCollator:
    """Stacks `{"input_ids", "idx"}` features (with `labels` where some targets carry no loss) into a
    causal-LM batch and masks the inputs."""

    mask_id: int | None
    ratio: float = 0.0
    sampling: str = "per-sequence"  # or "official"
    seed: int = 0
    global_batch: int = 1

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        clean = torch.stack([torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features])
        inputs = clean.clone()
        if self.ratio > 0:
            if self.mask_id is None:
                raise ValueError("MEAP masking needs a tokenizer with a [MASK] token")
            length = clean.shape[1]
            if self.sampling == "official":
                step = int(features[0]["idx"]) // self.global_batch
                inputs[:, torch.tensor(official_positions(step, length, self.ratio))] = self.mask_id
            else:
                for row, f in enumerate(features):
                    inputs[row, per_sequence_positions(length, self.ratio, self.seed, int(f["idx"]))] = self.mask_id
        if "labels" in features[0]:
            labels = torch.stack([torch.as_tensor(f["labels"], dtype=torch.long) for f in features])
        else:
            labels = clean.clone()
        if self.mask_id is not None:
            labels[labels == self.mask_id] = -100  # [MASK] is never a target
        return {"input_ids": inputs, "attention_mask": torch.ones_like(inputs), "labels": labels}
