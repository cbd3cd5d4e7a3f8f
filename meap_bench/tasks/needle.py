"""Needle-in-a-haystack: a length x depth grid of token-exact prompts with a needle at a sentence
boundary, scored by `contains`, ROUGE-1 recall and a generation-free rank of the answer.

`rank` compares mean log-probabilities per token (length-normalised): with summed log-probabilities a
longer answer loses to shorter distractors whatever the model knows (the `sandwich` gold is the longest
candidate). `answer_logprob` stays the summed log-probability of the gold answer."""

from __future__ import annotations

import bisect
import math
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator
from transformers import BatchEncoding

from meap_bench.backends.base import LLOutput
from meap_bench.config import OneOrMore, Strict
from meap_bench.data.haystacks import haystack_sentences
from meap_bench.data.synthetic import MAGIC_INSTRUCTION, magic_keys, magic_value
from meap_bench.report_spec import Heatmap, ReportSpec
from meap_bench.scoring import contains, rouge1_recall
from meap_bench.scoring.scorers import teacher_forced
from meap_bench.tasks.base import (
    ModelContext,
    Sample,
    Task,
    TaskConfig,
    continuation_ids,
    encode_prompt,
    token_spans,
)

MAX_GRID = 1000  # points of one grid axis; bounds every loop over user-given sizes
MAX_SAMPLES_PER_CELL = 100_000
MAX_DISTRACTORS = 100  # distinct 7-digit values are drawn until there are this many
PLACEHOLDERS = ("key", "value")
AXIS_LABELS = {"length": "Context length (tokens)", "depth": "Needle depth (%)"}
Lengths = Annotated[OneOrMore[PositiveInt], Field(min_length=1, max_length=MAX_GRID)]
Depths = Annotated[OneOrMore[Annotated[float, Field(ge=0, le=100)]], Field(min_length=1, max_length=MAX_GRID)]


class Grid(Strict):
    """`min`..`max` in `intervals` steps; sigmoid spacing crowds the middle, keeping both ends (as the
    original NIAH tool does for depths)."""

    min: float
    max: float
    intervals: Annotated[int, Field(ge=1, le=MAX_GRID)]
    spacing: Literal["linear", "sigmoid"] = "linear"

    def values(self) -> list[float]:
        step = (self.max - self.min) / max(self.intervals - 1, 1)
        points = [self.min + i * step for i in range(self.intervals)]
        if self.spacing == "sigmoid":
            points = [p if p in (0, 100) else 100 / (1 + math.exp(-0.1 * (p - 50))) for p in points]
        return [round(p, 3) for p in points]


class NeedleSpec(Strict):
    """A needle as templates; `{key}` and `{value}` are filled with a seeded word and 7-digit number."""

    fact: str
    question: str
    answer_prefix: str
    answer: str
    distractors: OneOrMore[str] = Field(default_factory=list)

    @field_validator("fact", "question", "answer_prefix", "answer", "distractors")
    @classmethod
    def known_placeholders(cls, value: str | list[str]) -> str | list[str]:
        """Only `{key}` and `{value}` (and `{{`/`}}` for a literal brace): anything else would fail when the
        needle is drawn, after the models load."""
        for text in [value] if isinstance(value, str) else value:
            try:
                fields = [f for _, f, spec, conv in string.Formatter().parse(text) if f is not None or spec or conv]
            except ValueError as err:
                raise ValueError(f"{err}; write {{{{ and }}}} for a literal brace") from None
            unknown = [f for f in fields if f not in PLACEHOLDERS]
            if unknown:
                raise ValueError(f"unknown placeholder {{{unknown[0]}}}; use {{key}} and {{value}}, or {{{{ and }}}} "
                                 f"for a literal brace")
        return value


NEEDLES = {
    "magic-number": NeedleSpec(
        fact="The special magic number for {key} is {value}.",
        question="What is the special magic number for {key}?",
        answer_prefix="The special magic number for {key} is",
        answer="{value}",
    ),
    "sandwich": NeedleSpec(
        fact="The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
        question="What is the best thing to do in San Francisco?",
        answer_prefix="The best thing to do in San Francisco is",
        answer="eat a sandwich and sit in Dolores Park on a sunny day",
        distractors=[
            "walk across the Golden Gate Bridge at sunset", "ride a cable car up to Nob Hill in the fog",
            "take the ferry to Alcatraz on a windy morning", "eat dim sum in Chinatown on a rainy afternoon",
            "watch the sea lions at Pier 39 in the evening", "climb the steps to Coit Tower before breakfast",
        ],
    ),
}


class NeedleConfig(TaskConfig):
    context_lengths: Lengths | Literal["auto"] | Grid = "auto"
    auto_lengths: Annotated[int, Field(ge=1, le=MAX_GRID)] = 4
    depths: Depths | Grid = Field(default_factory=lambda: Grid(min=0, max=100, intervals=3))
    samples_per_cell: Annotated[int, Field(ge=1, le=MAX_SAMPLES_PER_CELL)] = 20
    needle: Literal["magic-number", "sandwich"] | NeedleSpec = "magic-number"
    haystack: str = "kjv"
    instruction: str = MAGIC_INSTRUCTION
    max_new_tokens: PositiveInt = 16
    distractors: int = Field(default=4, ge=0, le=MAX_DISTRACTORS)
    headline_metric: Literal["contains", "rouge1", "rank"] = "contains"

    @field_validator("distractors")
    @classmethod
    def rank_needs_distractors(cls, value: int, info: ValidationInfo) -> int:
        """`rank` exists only against distractors (headline_metric is validated first: TaskConfig's field)."""
        if value == 0 and info.data.get("headline_metric") == "rank":
            raise ValueError("headline_metric rank needs distractors > 0; give distractors or another metric")
        return value

    @field_validator("depths")
    @classmethod
    def depths_are_percents(cls, depths: list[float] | Grid) -> list[float] | Grid:
        if isinstance(depths, Grid) and not 0 <= depths.min <= depths.max <= 100:
            raise ValueError("min and max must lie in 0..100 (percent of the haystack), min <= max")
        return depths

    @field_validator("context_lengths")
    @classmethod
    def lengths_are_positive(cls, lengths: list[int] | str | Grid) -> list[int] | str | Grid:
        if isinstance(lengths, Grid) and not 1 <= lengths.min <= lengths.max:
            raise ValueError("min and max must be positive, min <= max")
        return lengths


@dataclass(frozen=True)
class DrawnNeedle:
    fact: str
    question: str
    answer_prefix: str
    answer: str
    distractors: tuple[str, ...]


class NeedleTask(Task):
    name = "needle"
    config_model = NeedleConfig
    config: NeedleConfig

    @classmethod
    def report_spec(cls, config: dict[str, Any]) -> ReportSpec:
        """The depth x length heatmap; `rank`'s chance level (the gold among its distractors) on its line panel."""
        chance = {"rank": 1 / (1 + config.get("distractors", 0))}
        return ReportSpec(axis_labels=AXIS_LABELS, heatmap=Heatmap(rows="depth", columns="length", chance=chance))

    def lengths(self, max_length: int) -> list[int]:
        lengths = self.config.context_lengths
        if lengths == "auto":
            n = self.config.auto_lengths
            return [max_length * (i + 1) // n for i in range(n)]
        if isinstance(lengths, Grid):
            return sorted({int(round(v)) for v in lengths.values()})
        return list(lengths)

    def depths(self) -> list[float]:
        depths = self.config.depths
        return depths.values() if isinstance(depths, Grid) else [float(d) for d in depths]

    def draw(self, index: int) -> DrawnNeedle:
        """Sample `index` gets the same needle in every cell (a paired design across the grid)."""
        spec = NEEDLES[self.config.needle] if isinstance(self.config.needle, str) else self.config.needle
        rng = random.Random(f"{self.seed}:needle:{index}")
        key = rng.choice(magic_keys("heldout")) if "{key}" in spec.fact else ""
        value = magic_value(rng)
        fill = {"key": key, "value": value}
        answer = spec.answer.format(**fill)
        if "{value}" in spec.answer:
            others: list[str] = []
            while len(others) < self.config.distractors:
                other = spec.answer.format(key=key, value=magic_value(rng))
                if other != answer and other not in others:
                    others.append(other)
        else:
            pool = [d.format(**fill) for d in spec.distractors]
            others = rng.sample(pool, min(self.config.distractors, len(pool)))
        return DrawnNeedle(spec.fact.format(**fill), spec.question.format(**fill),
                           spec.answer_prefix.format(**fill), answer, tuple(others))

    def samples(self, model: ModelContext) -> Iterator[Sample]:
        count = min(self.config.samples_per_cell, self.limit or self.config.samples_per_cell)
        needles = [self.draw(i) for i in range(count)]
        builder = PromptBuilder(self.config, model)
        for length in self.lengths(model.max_length):
            for depth in self.depths():
                for index, needle in enumerate(needles):
                    sample_id = f"L{length}-D{depth:g}-S{index}"
                    cell = {"length": length, "depth": depth}
                    if length > model.max_length:
                        yield Sample(sample_id, cell, needle.answer, item_id=f"needle-{index}",
                                     skip_reason=f"context length {length} > checkpoint max length "
                                                 f"{model.max_length}")
                        continue
                    yield builder.build(sample_id, cell, needle, f"needle-{index}")

    def score(self, sample: Sample, output: str | None, choices: list[LLOutput]) -> dict[str, float]:
        scores = {"contains": contains(output or "", sample.target),
                  "rouge1": rouge1_recall(output or "", sample.target)}
        scores.update(teacher_forced(choices[0] if choices else None))
        if len(choices) > 1:
            means = [c.logprob / len(ids) for c, ids in zip(choices, sample.choices, strict=True)]
            scores["rank"] = float(all(means[0] > m for m in means[1:]))
        return scores


class PromptBuilder:
    """Token-exact prompt construction for one checkpoint's tokenizer.

    The haystack is a prefix of the source's sentences. Its per-sentence token counts are estimated
    once (one tokenisation with offsets), then every prompt is tokenised whole and shrunk a sentence
    at a time until prompt + max_new_tokens fits the cell; nothing is ever truncated mid-text."""

    def __init__(self, config: NeedleConfig, model: ModelContext) -> None:
        self.config = config
        self.model = model
        self.source = haystack_sentences(config.haystack)
        self.sentences: list[str] = []  # the source, repeated as often as the longest cell needs
        self.bounds: list[int] = [0]  # estimated tokens before sentence i

    def estimate_bounds(self, tokens_needed: int) -> None:
        """Extend the per-sentence token estimate until it covers `tokens_needed` tokens."""
        while self.bounds[-1] < tokens_needed:
            count = max(2 * len(self.bounds), tokens_needed // 4 + 16)
            while len(self.sentences) < count:
                self.sentences.extend(self.source)
            text = " ".join(self.sentences[:count])
            enc = self.model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            starts = [s for s, _ in enc["offset_mapping"]]
            bounds, pos = [0], 0
            for sentence in self.sentences[:count]:
                pos += len(sentence) + 1
                bounds.append(bisect.bisect_left(starts, pos - 1))
            bounds[-1] = len(starts)
            self.bounds = bounds

    def render(self, needle: DrawnNeedle, n: int, depth: float) -> tuple[str, str, BatchEncoding]:
        hay = self.sentences[:n]
        target = depth / 100 * self.bounds[n]
        k = min(range(n + 1), key=lambda i: (abs(self.bounds[i] - target), i))
        haystack = " ".join(hay[:k] + [needle.fact] + hay[k:])
        head = f"{self.config.instruction}\n\n" if self.config.instruction else ""
        user = f"{head}{haystack}\n\nQuestion: {needle.question}"
        text, enc = encode_prompt(self.model, user, f"Answer: {needle.answer_prefix}")
        return text, haystack, enc

    def build(self, sample_id: str, cell: dict, needle: DrawnNeedle, item_id: str) -> Sample:
        """The longest haystack (whole sentences) for which prompt + max_new_tokens fits the cell."""
        length, depth = cell["length"], cell["depth"]
        budget = length - self.config.max_new_tokens
        empty = self.render(needle, 0, depth)
        if len(empty[2]["input_ids"]) > budget:
            return Sample(sample_id, cell, needle.answer, item_id=item_id,
                          skip_reason=f"prompt without haystack ({len(empty[2]['input_ids'])} tokens) + "
                                      f"{self.config.max_new_tokens} new tokens exceeds length {length}")
        self.estimate_bounds(budget + 64)
        room = budget - len(empty[2]["input_ids"])
        n = max(bisect.bisect_right(self.bounds, room) - 1, 0)
        best = self.render(needle, n, depth)
        if len(best[2]["input_ids"]) <= budget:
            while n + 1 < len(self.bounds):
                grown = self.render(needle, n + 1, depth)
                if len(grown[2]["input_ids"]) > budget:
                    break
                n, best = n + 1, grown
        else:
            while n > 0 and len(best[2]["input_ids"]) > budget:
                n -= 1
                best = self.render(needle, n, depth)
        text, haystack, enc = best
        ids = list(enc["input_ids"])
        hay_start = text.index(haystack)
        needle_char = hay_start + haystack.index(needle.fact)
        first, needle_tok = enc.char_to_token(hay_start), enc.char_to_token(needle_char)
        last = enc.char_to_token(hay_start + len(haystack) - 1) + 1
        needle_len = enc.char_to_token(needle_char + len(needle.fact) - 1) + 1 - needle_tok
        around = max(last - first - needle_len, 1)  # haystack tokens around the needle
        chat = self.model.chat_template
        choices = [continuation_ids(self.model.tokenizer, text, ids, f" {a}", chat)
                   for a in (needle.answer, *needle.distractors)]
        question = text.rindex(f"Question: {needle.question}")
        chars = {"target": (needle_char, needle_char + len(needle.fact)),
                 "context": (hay_start, hay_start + len(haystack)),
                 "question": (question, question + len(f"Question: {needle.question}"))}
        if self.config.instruction:
            start = text.index(self.config.instruction)
            chars["instruction"] = (start, start + len(self.config.instruction))
        return Sample(
            sample_id, cell, needle.answer, item_id=item_id, prompt_text=text, prompt_ids=ids,
            max_new_tokens=self.config.max_new_tokens, stop=("\n",), choices=choices,
            target_offset=needle_tok,
            meta={"depth_actual": round(100 * (needle_tok - first) / around, 2), "haystack_tokens": around,
                  "fact": needle.fact, "spans": token_spans(enc, chars)},
        )
