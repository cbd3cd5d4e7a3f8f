"""Attention analysis: where the answer-generating position looks, on the needle and mdqa prompts.

The prompts are the needle and mdqa tasks' own (their builders, cells, items and seeds), with each part's
exact token range (`Sample.meta["spans"]`): the target (the needle fact, or the gold document), the whole
context (haystack, or every document), the instruction and the final question. One forward pass per
prompt asks the backend for the attention of the query positions (the last prompt token, and optionally
the teacher-forced answer tokens) summed over each span, per layer and head, and its entropy.

Cells: the source task's cell plus `source` (`needle` or `mdqa`); sample ids `<source>/<source sample id>`
and the source's item ids, so paired statistics match the same prompts and items as the source tasks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from meap_bench.backends.base import ATTENTION, AttnOutput, AttnRequest
from meap_bench.report_spec import AttentionMaps, ReportSpec
from meap_bench.tasks.base import ModelContext, Sample, Task, TaskConfig
from meap_bench.tasks.mdqa import AXIS_LABELS as MDQA_AXES
from meap_bench.tasks.mdqa import MdqaConfig, MdqaTask
from meap_bench.tasks.needle import AXIS_LABELS as NEEDLE_AXES
from meap_bench.tasks.needle import NeedleConfig, NeedleTask

SOURCES = {"needle": NeedleTask, "mdqa": MdqaTask}
LAYER_SPANS = ("target", "distractor", "instruction", "question")  # per-layer means kept in records
DIGITS = 5  # per-layer and per-head arrays are rounded to 1e-5


class AttentionConfig(TaskConfig):
    sources: list[Literal["needle", "mdqa"]] = Field(default_factory=lambda: ["needle", "mdqa"], min_length=1)
    # the source tasks' defaults, with fewer needles and questions (the same first ones: the source tasks'
    # seeded items) so that the default pair runs in about a minute on a laptop CPU
    needle: NeedleConfig = Field(default_factory=lambda: NeedleConfig(samples_per_cell=3))
    mdqa: MdqaConfig = Field(default_factory=lambda: MdqaConfig(questions=10, closed_book=False))
    answer_tokens: bool = False
    headline_metric: Literal["target_mass", "target_ratio", "entropy"] = "target_mass"

    @field_validator("sources", mode="before")
    @classmethod
    def one_as_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("mdqa")
    @classmethod
    def documents_needed(cls, value: MdqaConfig) -> MdqaConfig:
        if value.closed_book:
            raise ValueError("closed-book prompts have no document to measure attention on; set "
                             "attention.mdqa.closed_book=false")
        return value


class AttentionTask(Task):
    name = "attention"
    config_model = AttentionConfig
    config: AttentionConfig
    requires = frozenset({ATTENTION})
    report = ReportSpec(axis_labels={**NEEDLE_AXES, **MDQA_AXES},
                        attention=AttentionMaps(split="source", axes={"needle": ("depth", "length"),
                                                                      "mdqa": ("position", "n_docs")}))

    def samples(self, model: ModelContext) -> Iterator[Sample]:
        for source in self.config.sources:
            task = SOURCES[source](getattr(self.config, source), seed=self.seed, limit=self.limit)
            for sample in task.samples(model):
                yield self.attention_sample(source, sample, model)

    def attention_sample(self, source: str, sample: Sample, model: ModelContext) -> Sample:
        """The source prompt, asking for attention summaries instead of text; skipped where the source
        skipped it, or where the teacher-forced answer would not fit."""
        sample_id, cell = f"{source}/{sample.sample_id}", {"source": source, **sample.cell}
        request = self.request(sample) if sample.prompt_ids is not None else None
        if request is None or len(request.input_ids) > model.max_length:
            reason = sample.skip_reason or (f"prompt + answer ({len(request.input_ids)} tokens) exceeds the "
                                            f"checkpoint's max length {model.max_length}")
            return Sample(sample_id, cell, sample.target, item_id=sample.item_id, skip_reason=reason,
                          meta=sample.meta)
        return Sample(sample_id, cell, sample.target, item_id=sample.item_id, prompt_text=sample.prompt_text,
                      prompt_ids=sample.prompt_ids, target_offset=sample.target_offset,
                      meta={**sample.meta, "queries": list(request.queries)}, attention=request)

    def request(self, sample: Sample) -> AttnRequest:
        """Query positions: the last prompt token (it predicts the first answer token) and, with
        `answer_tokens`, the teacher-forced answer's tokens that predict the rest of the answer."""
        assert sample.prompt_ids is not None
        ids, last = sample.prompt_ids, len(sample.prompt_ids) - 1
        if self.config.answer_tokens:
            ids = ids + sample.choices[0][:-1]
        spans = {name: (start, end) for name, (start, end) in sample.meta["spans"].items()}
        return AttnRequest(ids, tuple(range(last, len(ids))), spans)

    def score_attention(self, sample: Sample, summary: AttnOutput) -> dict[str, float]:
        """Means over layers, heads and query positions; per-layer x head arrays go into the record's meta."""
        assert sample.attention is not None
        spans = sample.attention.spans
        mass = {name: values.mean(axis=0) for name, values in summary.mass.items()}  # [layer, head]
        mass["distractor"] = mass["context"] - mass["target"]
        entropy = summary.entropy.mean(axis=0)
        scores = {f"{name}_mass": float(mass[name].mean()) for name in LAYER_SPANS if name in mass}
        scores["rest_mass"] = 1.0 - sum(scores.values())
        per_token = {name: float(mass[name].mean()) / (spans[name][1] - spans[name][0])
                     for name in ("target", "context")}
        scores["target_ratio"] = per_token["target"] / per_token["context"] if per_token["context"] > 0 else np.nan
        scores["target_mass_max"] = float(mass["target"].max())
        scores["entropy"] = float(entropy.mean())
        sample.meta = {**sample.meta, "layer_head": {"target": rounded(mass["target"]), "entropy": rounded(entropy)},
                       "layer": {**{name: rounded(mass[name].mean(axis=1)) for name in LAYER_SPANS if name in mass},
                                 "entropy": rounded(entropy.mean(axis=1))}}
        return scores


def rounded(values: np.ndarray) -> list:
    return np.round(values.astype(float), DIGITS).tolist()
