"""MEAP pre-training masking: counts, independence, the official 51-pattern cycle, clean targets."""

from __future__ import annotations

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from meap_bench.train.masking import MeapCollator, official_positions, per_sequence_positions  # noqa: E402

MASK, L = 2, 200


def _features(n: int, start: int = 0, length: int = L) -> list[dict]:
    gen = torch.Generator().manual_seed(start)
    return [{"input_ids": torch.randint(3, 300, (length,), generator=gen), "idx": start + i} for i in range(n)]


def test_per_sequence_counts_and_independent_rows():
    feats = _features(6)
    batch = MeapCollator(MASK, 0.15, "per-sequence", seed=7)(feats)
    masked = batch["input_ids"] == MASK
    assert masked.sum(1).tolist() == [int(L * 0.15)] * 6
    assert not masked[:, -1].any()  # the last input predicts nothing and is never masked
    patterns = {tuple(row.nonzero().flatten().tolist()) for row in masked}
    assert len(patterns) == 6
    # deterministic per (seed, idx), whatever the batch it lands in
    again = MeapCollator(MASK, 0.15, "per-sequence", seed=7)(feats[3:])
    assert torch.equal(again["input_ids"], batch["input_ids"][3:])
    assert torch.equal(per_sequence_positions(L, 0.15, 7, 3), masked[3].nonzero().flatten())


def test_targets_are_clean_and_mask_never_a_target():
    feats = _features(4)
    feats[0]["input_ids"][5] = MASK  # even a [MASK] id in the clean text is never a target
    batch = MeapCollator(MASK, 0.15, "per-sequence", seed=1)(feats)
    clean = torch.stack([f["input_ids"] for f in feats])
    keep = clean != MASK
    assert torch.equal(batch["labels"][keep], clean[keep])
    assert not (batch["labels"] == MASK).any()
    assert (batch["labels"][0, 5] == -100).item()
    unmasked = batch["input_ids"] != MASK
    assert torch.equal(batch["input_ids"][unmasked], clean[unmasked])


def test_official_mode_shares_columns_and_cycles_every_51_steps():
    gb = 4
    step3 = MeapCollator(MASK, 0.15, "official", global_batch=gb)(_features(gb, start=3 * gb))
    masked = step3["input_ids"] == MASK
    assert (masked == masked[0]).all()  # same columns in every row
    assert masked[0].nonzero().flatten().tolist() == official_positions(3, L, 0.15)
    assert len(official_positions(3, L, 0.15)) == int((L - 1) * 0.15)
    assert max(official_positions(3, L, 0.15)) < L - 2
    patterns = [tuple(official_positions(s, L, 0.15)) for s in range(102)]
    assert patterns[:51] == patterns[51:]
    assert len(set(patterns)) == 51
    step54 = MeapCollator(MASK, 0.15, "official", global_batch=gb)(_features(gb, start=54 * gb))
    assert torch.equal(step54["input_ids"] == MASK, masked)


def reference_mask_positions(step_count: int, block_size: int, mask_ratio: float) -> list[int]:
    """Transcribed from scitix/MEAP MEAP-Pretain/pretrained/meap_1b.py `train` (global `random` there):
    `input_ids = train_data[:, 0:block_size]` of rows of block_size + 1 tokens."""
    rnd = random.Random()
    rnd.seed(50 + (step_count % 51))  # get_cycled_seed
    num_masks = max(1, int(block_size * mask_ratio))
    return rnd.sample(range(0, block_size - 1), num_masks)


@pytest.mark.parametrize(("block", "ratio"), [(4096, 0.15), (1023, 0.15), (199, 0.1), (4, 0.15)])
def test_official_mode_equals_the_official_code(block, ratio):
    """Our rows carry block + 1 tokens (inputs and the last target), as the official rows do."""
    gb = 2
    for step in (0, 7, 50, 51):
        batch = MeapCollator(MASK, ratio, "official", global_batch=gb)(_features(gb, start=step * gb,
                                                                                 length=block + 1))
        masked = (batch["input_ids"] == MASK)
        expected = sorted(reference_mask_positions(step, block, ratio))
        assert masked[0].nonzero().flatten().tolist() == masked[1].nonzero().flatten().tolist() == expected
    assert len(expected) == max(1, int(block * ratio))  # at least one mask (block 4 at 15%: one)


@pytest.mark.parametrize("sampling", ["per-sequence", "official"])
def test_ratio_zero_equals_plain_causal_lm_collator(tmp_path, sampling):
    from transformers import DataCollatorForLanguageModeling

    from meap_bench.tokenization import load_tokenizer
    from meap_bench.train.tokenizer import train_tokenizer

    train_tokenizer(["a small text for a small tokenizer, 1234567."] * 5, 1600, tmp_path)
    tok = load_tokenizer(tmp_path)
    feats = [{"input_ids": f["input_ids"].tolist(), "idx": f["idx"]} for f in _features(3)]
    ours = MeapCollator(MASK, 0.0, sampling)(feats)
    plain = DataCollatorForLanguageModeling(tok, mlm=False)([{"input_ids": f["input_ids"]} for f in feats])
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(ours[key], plain[key]), key
