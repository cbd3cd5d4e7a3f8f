"""MEAP for supervised fine-tuning, and the SFT data set.

* concat (paper): when the answer is longer than `min_answer` tokens, the row is
  `prompt + answer + eos + prompt + masked_answer + eos`, where `masked_answer` has `max(1, int(n * P))`
  of its n tokens replaced by `[MASK]`; labels are the clean answer (and eos) in the first half and the
  clean token at each masked position in the copy (-100 elsewhere). Shorter answers: a plain SFT row.
* separate-row (official code, `MEAP-SFT/MEAP-SFT.py` `preprocess_function`): the plain SFT row, plus,
  when the answer is long enough, a second row `prompt + masked_answer + eos` with labels only at the
  masked positions.

As the official code: n counts the answer tokens that fit the row (`max_len - 1` with the final eos), the
masks are drawn among those only, and rows left without any target are dropped (`filter_empty_labels`).
Labels are aligned with the inputs (the model does the usual one-token shift). Masks are drawn once at
preprocessing time from a seeded generator.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from meap_bench.errors import UserError

IGNORE = -100


def plain_row(prompt: list[int], answer: list[int], eos: int) -> dict[str, list[int]]:
    return {"input_ids": prompt + answer + [eos], "labels": [IGNORE] * len(prompt) + answer + [eos]}


def masked_answer(answer: list[int], mask_id: int, ratio: float, rng: random.Random) -> tuple[list[int], list[int]]:
    """The (non-empty) answer with `max(1, int(n * ratio))` tokens masked, and its labels (clean token
    where masked)."""
    where = set(rng.sample(range(len(answer)), max(1, int(len(answer) * ratio))))
    masked = [mask_id if i in where else t for i, t in enumerate(answer)]
    labels = [t if i in where else IGNORE for i, t in enumerate(answer)]
    return masked, labels


def sft_rows(
    prompt: list[int],
    answer: list[int],
    *,
    eos: int,
    mask_id: int | None,
    variant: str,
    ratio: float,
    min_answer: int,
    max_len: int,
    rng: random.Random,
) -> list[dict[str, list[int]]]:
    """Training rows (at most `max_len` tokens, each with a target) for one example; NTP when `mask_id` is
    None or ratio is 0."""
    if variant not in ("concat", "separate-row"):
        raise ValueError(f"unknown sft variant {variant!r}")
    plain = plain_row(prompt, answer, eos)
    rows = [plain]
    if mask_id is not None and ratio > 0 and len(answer) > min_answer:
        start = len(prompt) + (len(plain["input_ids"]) if variant == "concat" else 0)
        fits = min(len(answer), max_len - 1 - start)  # official: target_end = min(len(full), max_length - 1)
        if fits > 0:
            masked, masked_labels = masked_answer(answer[:fits], mask_id, ratio, rng)
            copy = {"input_ids": prompt + masked + [eos],
                    "labels": [IGNORE] * len(prompt) + masked_labels + [IGNORE]}
            rows = [{k: plain[k] + copy[k] for k in plain}] if variant == "concat" else [plain, copy]
    rows = [{k: v[:max_len] for k, v in row.items()} for row in rows]
    return [row for row in rows if any(label != IGNORE for label in row["labels"])]


def load_records(path: str | Path) -> list[tuple[str, str]]:
    """(prompt, answer) pairs from Alpaca-style or conversation-style JSON / JSONL."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: SFT data file not found; set data.sft_path to a JSON or JSONL file")
    text = path.read_text(encoding="utf-8")
    try:
        records = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(x) for x in text.splitlines() if x.strip()]
        )
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON/JSONL ({err}); fix the file") from None
    pairs = []
    for i, rec in enumerate(records):
        if "conversations" in rec:
            turns = rec["conversations"]
            if not turns or turns[-1].get("from") not in ("gpt", "assistant"):
                raise UserError(f"{path}: record {i} does not end with a gpt/assistant turn")
            history = "".join(
                f"{'User' if t['from'] in ('human', 'user') else 'Assistant'}: {t['value']}\n" for t in turns[:-1]
            )
            pairs.append((history + "Assistant:", " " + turns[-1]["value"]))
        elif "instruction" in rec and "output" in rec:
            inp = f"\n\n### Input:\n{rec['input']}" if rec.get("input") else ""
            pairs.append((f"### Instruction:\n{rec['instruction']}{inp}\n\n### Response:\n", rec["output"]))
        else:
            raise UserError(f"{path}: record {i} has neither instruction/output nor conversations")
    return pairs


class SftDataset(torch.utils.data.Dataset):
    """Rows built once (masks fixed); index i of epoch e maps to a seeded permutation of that epoch."""

    def __init__(self, rows: list[dict[str, list[int]]], epochs: int, seed: int):
        self.rows = rows
        self.order = [i for e in range(epochs) for i in random.Random(seed + e).sample(range(len(rows)), len(rows))]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, idx: int) -> dict:
        return {**self.rows[self.order[idx]], "idx": idx}


def build_sft_rows(
    pairs: list[tuple[str, str]],
    tokenizer,
    *,
    mask_id: int | None,
    variant: str,
    ratio: float,
    min_answer: int,
    max_len: int,
    seed: int,
) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    eos = tokenizer.eos_token_id
    rows = []
    for prompt, answer in pairs:
        p = tokenizer(prompt)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        rows += sft_rows(p, a, eos=eos, mask_id=mask_id, variant=variant, ratio=ratio, min_answer=min_answer,
                         max_len=max_len, rng=rng)
    return rows


@dataclass
class SftCollator:
    pad_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        attn = torch.zeros((len(features), width), dtype=torch.long)
        for r, f in enumerate(features):
            n = len(f["input_ids"])
            ids[r, :n] = torch.tensor(f["input_ids"])
            labels[r, :n] = torch.tensor(f["labels"])
            attn[r, :n] = 1
        return {"input_ids": ids, "attention_mask": attn, "labels": labels}
