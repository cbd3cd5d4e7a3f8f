"""Scores that carry more than numbers, and the scoring shared by several tasks.

A `Score` is what a scorer returns for one sample (in the spirit of Inspect AI's `Score(value, explanation,
metadata)`): its values, an explanation and metadata that the record keeps in its `meta`. A scorer that calls
a model (a judge) has an identity (name, version, judge model, judge prompt sha256) that the sample folds into
its request hash, so switching judges never reuses stale verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meap_bench.backends.base import LLOutput


@dataclass
class Score:
    values: dict[str, float]
    explanation: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    final: bool = True  # False: the scorer could not finish (a judge request failed); not recorded, so rerun retries


def teacher_forced(gold: LLOutput | None) -> dict[str, float]:
    """The teacher-forced answer scores of needle, mdqa and kv: log p(gold answer | prompt) and whether greedy
    decoding would produce it token by token (none when the sample scored no continuation)."""
    if gold is None:
        return {}
    return {"answer_logprob": gold.logprob, "answer_greedy": float(gold.is_greedy)}
