"""What the position-sweep tasks (mdqa, kv) share: gold placement, position lists, and token-exact
sample groups that are skipped together when they do not fit the checkpoint's context."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, PositiveInt

from meap_bench.config import OneOrMore
from meap_bench.errors import UserError
from meap_bench.tasks.base import ModelContext, Sample, TaskConfig, continuation_ids, encode_prompt, token_spans

T = TypeVar("T")
AUTO_NEW_TOKENS_SLACK = 8  # `max_new_tokens: auto` = the longest gold answer's tokens + this
IntList = Annotated[OneOrMore[PositiveInt], Field(min_length=1)]  # `--set x=5`: [5]
REFERENCE_NEW_TOKENS = 100  # lost-in-the-middle's scripts/get_*_responses_from_*.py `--max-new-tokens`
MAX_COUNT = 100_000  # questions or records per cell: a bound on every loop over a user-given size


def at_most(limit: int, what: str):
    """A check that every size in a list stays below `limit` (each size is a loop over items)."""
    def check(values: Any) -> Any:
        if isinstance(values, list) and values and max(values) > limit:
            raise ValueError(f"{max(values)} {what} is more than the {limit} supported")
        return values
    return check


class PositionConfig(TaskConfig):
    """Fields every position sweep has."""

    positions: IntList | Literal["auto"] = "auto"
    query_aware: bool = False
    max_new_tokens: PositiveInt | Literal["auto"] = REFERENCE_NEW_TOKENS
    data_dir: str | None = None


def place(gold: T, distractors: Sequence[T], n: int, position: int) -> list[T]:
    """`n` items: the first n-1 distractors in their order, with `gold` at 1-based `position`."""
    if not 1 <= position <= n:
        raise ValueError(f"position must be in 1..{n}, not {position}")
    if len(distractors) < n - 1:
        raise ValueError(f"{n} items need {n - 1} distractors, only {len(distractors)} given")
    items = list(distractors[: n - 1])
    items.insert(position - 1, gold)
    return items


def paper_positions(n: int) -> list[int]:
    """Lost-in-the-middle positions: 1, then every fifth up to n, and n (10 -> 1, 5, 10; 20 -> 1, 5, 10,
    15, 20); every position when n <= 5, so that small sizes still have a middle."""
    if n <= 5:
        return list(range(1, n + 1))
    return sorted({1, n, *range(5, n + 1, 5)})


def spread_positions(n: int, count: int) -> list[int]:
    """`count` positions as lost-in-the-middle places the key (gold index 0, then n/(count-1) - 1 steps:
    75 keys -> 1, 25, 50, 75; 140 -> 1, 35, 70, 105, 140; 300 -> 1, 50, ..., 300); fewer if n is small."""
    if count == 1 or n == 1:
        return [1]
    return sorted({1} | {max(1, math.floor(i * n / (count - 1) + 0.5)) for i in range(1, count)})


def chosen_positions(spec: list[int] | Literal["auto"], n: int, auto: list[int], what: str) -> list[int]:
    """The configured positions that exist among `n` items (`auto` gives `auto`)."""
    if spec == "auto":
        return auto
    found = sorted({p for p in spec if p <= n})
    if not found:
        raise UserError(f"{what}: none of the positions {list(spec)} exists among {n} items; give positions "
                        f"<= {n}")
    return found


@dataclass
class Prompt:
    """One prompt of a group before tokenisation; `gold_text` locates the gold item in the prompt;
    `spans` names parts of the user text whose token ranges (last occurrence) go into meta["spans"]."""

    sample_id: str
    item_id: str
    cell: dict[str, Any]
    user_text: str
    answer_prefix: str
    gold_text: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    spans: dict[str, str] = field(default_factory=dict)


def build_group(model: ModelContext, prompts: list[Prompt], answers: Sequence[str],
                max_new_tokens: int | Literal["auto"], answer_sep: str = " ",
                stop: tuple[str, ...] = ("\n",)) -> list[Sample]:
    """Token-exact samples of prompts that share one question and one size (its positions): if any of
    them does not fit the checkpoint's context with `max_new_tokens`, all are skipped and marked (the
    same questions stay in every position; nothing is truncated). The first answer is the
    teacher-forced choice. Generation ends at `stop` (default: the first line, all that mdqa scores)."""
    tokenizer, chat = model.tokenizer, model.chat_template
    encoded = [encode_prompt(model, p.user_text, p.answer_prefix) for p in prompts]
    conts = [continuation_ids(tokenizer, text, list(enc["input_ids"]), f"{answer_sep}{answers[0]}", chat)
             for text, enc in encoded]
    if max_new_tokens == "auto":
        others = [len(tokenizer(f"{answer_sep}{a}", add_special_tokens=False)["input_ids"]) for a in answers[1:]]
        new = max([len(c) for c in conts] + others) + AUTO_NEW_TOKENS_SLACK
    else:
        new = max_new_tokens
    longest = max(len(enc["input_ids"]) for _, enc in encoded)
    samples = []
    for prompt, (text, enc), cont in zip(prompts, encoded, conts, strict=True):
        if longest + new > model.max_length:
            reason = (f"prompt of {longest} tokens + {new} new tokens exceeds the checkpoint's max length "
                      f"{model.max_length}")
            samples.append(Sample(prompt.sample_id, prompt.cell, answers[0], prompt.item_id, skip_reason=reason,
                                  meta={**prompt.meta, "answers": list(answers), "prompt_tokens": longest}))
            continue
        ids = list(enc["input_ids"])
        offset = None
        if prompt.gold_text is not None:
            char = text.find(prompt.gold_text)
            if char < 0:
                raise RuntimeError(f"{prompt.sample_id}: gold text not found in the rendered prompt")
            offset = enc.char_to_token(char)
        spans = {"spans": token_spans(enc, last_occurrences(text, prompt.spans))} if prompt.spans else {}
        samples.append(Sample(
            prompt.sample_id, prompt.cell, answers[0], prompt.item_id, prompt_text=text, prompt_ids=ids,
            max_new_tokens=new, stop=stop, choices=[cont], target_offset=offset,
            meta={**prompt.meta, "answers": list(answers),
                  "tokens_after_gold": len(ids) - offset if offset is not None else None, **spans},
        ))
    return samples


def last_occurrences(text: str, parts: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Character range of the last occurrence of each named part in `text`."""
    ranges = {}
    for name, part in parts.items():
        start = text.rfind(part)
        if start < 0:
            raise RuntimeError(f"span '{name}' not found in the rendered prompt")
        ranges[name] = (start, start + len(part))
    return ranges
