"""MEAP-SFT: the concat layout, the 50-token threshold, the separate-row variant, data loading."""

from __future__ import annotations

import json
import random

import pytest

from meap_bench.errors import UserError
from meap_bench.train.sft import IGNORE, SftCollator, SftDataset, load_records, sft_rows

EOS, MASK = 0, 2
PROMPT = list(range(100, 110))


def _rows(n_answer: int, variant: str, ratio: float = 0.1, mask_id: int | None = MASK):
    answer = list(range(1000, 1000 + n_answer))
    return answer, sft_rows(
        PROMPT, answer, eos=EOS, mask_id=mask_id, variant=variant, ratio=ratio, min_answer=50, rng=random.Random(0)
    )


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
