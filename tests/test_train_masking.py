"""MEAP pre-training masking: counts, independence, the official 51-pattern cycle, clean targets."""

from __future__ import annotations

import os

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
    assert len(official_positions(3, L, 0.15)) == int(L * 0.15)
    assert max(official_positions(3, L, 0.15)) < L - 1
    patterns = [tuple(official_positions(s, L, 0.15)) for s in range(102)]
    assert patterns[:51] == patterns[51:]
    assert len(set(patterns)) == 51
    step54 = MeapCollator(MASK, 0.15, "official", global_batch=gb)(_features(gb, start=54 * gb))
    assert torch.equal(step54["input_ids"] == MASK, masked)


@pytest.mark.parametrize("sampling", ["per-sequence", "official"])
def test_ratio_zero_equals_plain_causal_lm_collator(tmp_path, sampling):
    from transformers import DataCollatorForLanguageModeling

    from meap_bench.tokenization import load_tokenizer
    from meap_bench.train.tokenizer import train_tokenizer

    train_tokenizer(["a small text for a small tokenizer, 1234567."] * 5, 300, tmp_path)
    tok = load_tokenizer(tmp_path)
    feats = [{"input_ids": f["input_ids"].tolist(), "idx": f["idx"]} for f in _features(3)]
    ours = MeapCollator(MASK, 0.0, sampling)(feats)
    plain = DataCollatorForLanguageModeling(tok, mlm=False)([{"input_ids": f["input_ids"]} for f in feats])
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(ours[key], plain[key]), key
