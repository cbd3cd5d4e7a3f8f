"""MEAP-SFT: the concat layout, the 50-token threshold, the separate-row variant, data loading."""

from __future__ import annotations

import json
import random

import pytest

from meap_bench.errors import UserError
from meap_bench.train.sft import IGNORE, SftCollator, SftDataset, load_records, sft_rows

EOS, MASK = 0, 2
PROMPT = list(range(100, 110))


def _rows(n_answer: int, variant: str, ratio: float = 0.1, mask_id: int | None = MASK, max_len: int = 4096,
          prompt: list[int] = PROMPT, seed: int = 0):
    answer = list(range(1000, 1000 + n_answer))
    return answer, sft_rows(prompt, answer, eos=EOS, mask_id=mask_id, variant=variant, ratio=ratio, min_answer=50,
                            max_len=max_len, rng=random.Random(seed))


def reference_masked_row(source_ids, target_ids, max_length, mask_ratio, rng):
    """Transcribed from scitix/MEAP MEAP-SFT/MEAP-SFT.py `preprocess_function` (the second loop; global
    `random` there, `MASK`/`EOS` for the tokenizer's ids)."""
    full_sequence = source_ids + target_ids
    if len(target_ids) > 50:
        target_start = len(source_ids)
        target_end = min(len(full_sequence), max_length - 1)
        actual_target_length = target_end - target_start
        num_masks = max(1, int(actual_target_length * mask_ratio))
        mask_positions = rng.sample(range(target_start, target_end), num_masks)
        masked_sequence = full_sequence[:target_end].copy()
        masked_labels = [-100] * len(masked_sequence)
        for pos in mask_positions:
            masked_sequence[pos] = MASK
            masked_labels[pos] = full_sequence[pos]
        masked_sequence.append(EOS)
        masked_labels.append(-100)
        return {"input_ids": masked_sequence, "labels": masked_labels}
    return None


@pytest.mark.parametrize(("n_answer", "ratio", "max_len"), [(80, 0.1, 4096), (51, 0.01, 4096), (300, 0.1, 120),
                                                             (60, 0.1, 64)])
def test_separate_row_copy_equals_the_official_code(n_answer, ratio, max_len):
    """max(1, int(n * P)) masks among the n answer tokens that fit `max_len - 1`, drawn as the official code
    draws them (the same seeded `random` gives the same positions)."""
    answer, rows = _rows(n_answer, "separate-row", ratio=ratio, max_len=max_len, seed=5)
    assert rows[-1] == reference_masked_row(PROMPT, answer, max_len, ratio, random.Random(5))
    assert sum(t == MASK for t in rows[-1]["input_ids"]) == max(1, int((min(n_answer, max_len - 11)) * ratio))


def test_rows_without_targets_are_dropped():
    """As the official `filter_empty_labels`: a prompt that fills the row leaves no answer token to learn."""
    long_prompt = list(range(100, 200))
    for variant in ("concat", "separate-row"):
        assert _rows(80, variant, max_len=100, prompt=long_prompt)[1] == []
        assert _rows(80, variant, max_len=100, prompt=long_prompt, mask_id=None)[1] == []
    _, rows = _rows(80, "separate-row", max_len=101, prompt=long_prompt)  # one answer token fits: no copy
    assert len(rows) == 1 and rows[0]["labels"][-1] == 1000 and MASK not in rows[0]["input_ids"]


def test_concat_layout_and_labels():
    answer, rows = _rows(80, "concat")
    assert len(rows) == 1
    ids, labels = rows[0]["input_ids"], rows[0]["labels"]
    n1 = len(PROMPT) + len(answer) + 1
    assert ids[:n1] == PROMPT + answer + [EOS]  # the original first
    assert labels[:n1] == [IGNORE] * len(PROMPT) + answer + [EOS]  # loss on the answer
    copy, copy_labels = ids[n1:], labels[n1:]
    assert copy[: len(PROMPT)] == PROMPT and copy[-1] == EOS  # then the masked copy
    masked = [i for i, t in enumerate(copy) if t == MASK]
    assert len(masked) == int(len(answer) * 0.1)
    assert all(len(PROMPT) <= i < len(PROMPT) + len(answer) for i in masked)
    for i, (t, lab) in enumerate(zip(copy, copy_labels, strict=True)):
        if i in masked:
            assert lab == answer[i - len(PROMPT)]  # the clean token where masked
        else:
            assert lab == IGNORE and (t == ids[i] or i >= len(PROMPT))


@pytest.mark.parametrize("variant", ["concat", "separate-row"])
def test_fifty_token_threshold(variant):
    _, rows = _rows(50, variant)
    assert rows == [
        {
            "input_ids": PROMPT + list(range(1000, 1050)) + [EOS],
            "labels": [IGNORE] * 10 + list(range(1000, 1050)) + [EOS],
        }
    ]
    _, rows = _rows(51, variant)
    assert any(MASK in r["input_ids"] for r in rows)


def test_ntp_twin_gets_plain_rows():
    _, rows = _rows(80, "concat", mask_id=None)
    assert len(rows) == 1 and MASK not in rows[0]["input_ids"]
    _, rows = _rows(80, "separate-row", ratio=0.0)
    assert len(rows) == 1 and MASK not in rows[0]["input_ids"]


def test_separate_row_labels_only_at_masked_positions():
    answer, rows = _rows(80, "separate-row")
    assert len(rows) == 2
    assert rows[0]["input_ids"] == PROMPT + answer + [EOS]
    ids, labels = rows[1]["input_ids"], rows[1]["labels"]
    assert len(ids) == len(PROMPT) + len(answer) + 1
    labelled = [i for i, lab in enumerate(labels) if lab != IGNORE]
    assert labelled == [i for i, t in enumerate(ids) if t == MASK]
    assert len(labelled) == 8
    assert all(labels[i] == answer[i - len(PROMPT)] for i in labelled)


def test_load_records_and_collator(tmp_path):
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "Add", "input": "1 and 2", "output": "3"}]))
    convo = tmp_path / "c.jsonl"
    convo.write_text(
        json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
    )
    assert load_records(alpaca) == [("### Instruction:\nAdd\n\n### Input:\n1 and 2\n\n### Response:\n", "3")]
    assert load_records(convo) == [("User: Hi\nAssistant:", " Hello")]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "no fields"}\n')
    with pytest.raises(UserError, match="b.jsonl: record 0"):
        load_records(bad)
    ds = SftDataset([{"input_ids": [5, 6], "labels": [IGNORE, 6]}, {"input_ids": [7], "labels": [7]}], 2, 0)
    assert len(ds) == 4 and sorted(ds.order[:2]) == [0, 1]
    batch = SftCollator(pad_id=1)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 2)
    assert batch["attention_mask"].sum().item() == 3
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


def test_sft_recipe_defaults_to_the_official_mask_ratio(tmp_path):
    from meap_bench.train.recipe import SFT_MASK_RATIO, load_recipe

    path = tmp_path / "s.yaml"
    path.write_text("stage: sft\ninit: checkpoints/tiny-ntp\ndata: {sft_path: x.jsonl}\n")
    assert SFT_MASK_RATIO == 0.1 and load_recipe(path).mask_ratio == 0.1  # MEAP-SFT.py `mask_ratio` default
    assert load_recipe(path, sets=["mask_ratio=0.2"]).mask_ratio == 0.2
    assert load_recipe(path, {"mask_ratio": 0.05}).mask_ratio == 0.05
    pretrain = tmp_path / "p.yaml"
    pretrain.write_text("stage: pretrain\n")
    assert load_recipe(pretrain).mask_ratio == 0.15
    assert load_recipe(pretrain, {"stage": "sft", "init": "m"}, ["data.sft_path=x"]).mask_ratio == 0.1
