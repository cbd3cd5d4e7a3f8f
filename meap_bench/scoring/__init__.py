"""Shared metrics: deterministic functions of (output, answers)."""

from meap_bench.scoring.text import (
    best_subspan_em,
    best_subspan_em_lenient,
    contains,
    first_line,
    normalize_answer,
    normalize_answer_lenient,
    rouge1_recall,
)

__all__ = ["best_subspan_em", "best_subspan_em_lenient", "contains", "first_line", "normalize_answer",
           "normalize_answer_lenient", "rouge1_recall"]
