"""Shared metrics: deterministic functions of (output, answers)."""

from meap_bench.scoring.text import best_subspan_em, contains, first_line, normalize_answer, rouge1_recall

__all__ = ["best_subspan_em", "contains", "first_line", "normalize_answer", "rouge1_recall"]
