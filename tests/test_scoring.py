"""The multi-document QA metric (best-subspan exact match on the first output line) as a table of cases,
and the reference implementation itself as the oracle.

Reference (lost-in-the-middle, `src/lost_in_the_middle/metrics.py` at 29b8a6d): lower case, remove ASCII
punctuation and the articles a/an/the, collapse white space; 1 if any normalised gold answer is a substring
of the normalised first line of the prediction (`scripts/evaluate_qa_responses.py`)."""

from __future__ import annotations

import gzip
import json
import string

import pytest
import regex
from conftest import SHARED

from meap_bench.scoring import (
    best_subspan_em,
    best_subspan_em_lenient,
    first_line,
    normalize_answer,
    normalize_answer_lenient,
)

NQ_ORACLE = SHARED / "data" / "lost-in-the-middle" / "nq-open-oracle.jsonl.gz"


def reference_normalize_answer(s: str) -> str:
    """Verbatim from lost_in_the_middle/metrics.py (nested helpers inlined)."""
    s = s.lower()
    exclude = set(string.punctuation)
    s = "".join(ch for ch in s if ch not in exclude)
    s = regex.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def reference_best_subspan_em(prediction: str, ground_truths: list[str]) -> float:
    """Verbatim from lost_in_the_middle/metrics.py, fed as scripts/evaluate_qa_responses.py feeds it."""
    normalized_prediction = reference_normalize_answer(prediction.split("\n")[0].strip())
    for ground_truth in ground_truths:
        normalized_ground_truth = reference_normalize_answer(ground_truth)
        if normalized_ground_truth.lower() in normalized_prediction.lower():
            return 1.0
    return 0.0


CASES = [
    # (prediction, gold answers, reference score, lenient score)
    ("Paris", ["Paris"], 1.0, 1.0),                                 # exact
    ("PARIS", ["paris"], 1.0, 1.0),                                 # case
    ("The answer is Paris.", ["Paris"], 1.0, 1.0),                  # sub-span and trailing punctuation
    ("Pari", ["Paris"], 0.0, 0.0),                                  # a prefix of the answer is not enough
    ("Parisian cafes", ["Paris"], 1.0, 1.0),                        # substring of the string, not token match
    ("The Beatles", ["Beatles"], 1.0, 1.0),                         # article in the prediction
    ("Beatles", ["The Beatles"], 1.0, 1.0),                         # article in the answer
    ("A Tale of Two Cities", ["Tale of Two Cities"], 1.0, 1.0),     # article a
    ("an apple", ["Apple"], 1.0, 1.0),                              # article an
    ("Anne", ["Anne"], 1.0, 1.0),                                   # 'an' inside a word stays
    ("ne", ["Anne"], 0.0, 0.0),                                     # ... so 'Anne' never becomes 'ne'
    ("Paris, France!", ["Paris France"], 1.0, 1.0),                 # punctuation between words
    ("  Paris \t France  ", ["Paris France"], 1.0, 1.0),            # white space collapsed
    ("\u201cParis\u201d", ["Paris"], 1.0, 1.0),                     # unicode quotation marks around it
    ("Wilhelm Conrad R\u00f6ntgen", ["Wilhelm Conrad R\u00f6ntgen"], 1.0, 1.0),  # unicode letters kept
    ("R\u00d6NTGEN", ["r\u00f6ntgen"], 1.0, 1.0),                   # unicode case
    ("R\u00f6ntgen", ["Rontgen"], 0.0, 0.0),                        # accents are not stripped
    ("London", ["Paris", "London"], 1.0, 1.0),                      # any of several answers
    ("Berlin", ["Paris", "London"], 0.0, 0.0),                      # none of several answers
    ("Paris\nLondon", ["London"], 0.0, 0.0),                        # first line only
    ("Paris\nLondon", ["Paris"], 1.0, 1.0),                         # first line only
    ("Paris is lovely in spring.\n", ["Paris"], 1.0, 1.0),          # trailing newline
    ("", ["Paris"], 0.0, 0.0),                                      # empty output
    ("U.S.A.", ["USA"], 1.0, 1.0),                                  # punctuation is deleted, not spaced
    ("\nParis", ["Paris"], 0.0, 0.0),                               # the literal first line, even if empty
    ("in 1979-80", ["1979\u201380"], 0.0, 1.0),                     # en dash: kept by the reference
    ("\ufb01ve", ["five"], 0.0, 1.0),                               # NFKC ligature: only the lenient folds it
    ("the", ["The"], 1.0, 0.0),                                     # gold normalising to '' matches (reference)
    ("anything at all", ["*"], 1.0, 0.0),                           # ... as NQ-Open's answer '*' does
]


@pytest.mark.parametrize(("prediction", "answers", "expected", "lenient"), CASES)
def test_best_subspan_em_table(prediction: str, answers: list[str], expected: float, lenient: float) -> None:
    assert best_subspan_em(prediction, answers) == expected == reference_best_subspan_em(prediction, answers)
    assert best_subspan_em_lenient(prediction, answers) == lenient


def test_normalisation_and_first_line() -> None:
    assert normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
    assert normalize_answer("an A the") == ""
    assert normalize_answer("1979\u201380") == "1979\u201380"  # ASCII punctuation only, as the reference
    assert normalize_answer_lenient("1979\u201380") == "197980"
    assert first_line("\n  \nfirst\nsecond") == ""
    assert first_line(" first \nsecond") == "first"
    assert first_line("") == ""


@pytest.mark.skipif(not NQ_ORACLE.is_file(), reason="../shared/data absent")
def test_normalisation_equals_the_reference_on_every_nq_open_answer() -> None:
    with gzip.open(NQ_ORACLE, "rt", encoding="utf-8") as handle:
        answers = [a for line in handle for a in json.loads(line)["answers"]]
    assert len(answers) > 2655
    assert [normalize_answer(a) for a in answers] == [reference_normalize_answer(a) for a in answers]
    lenient = sum(normalize_answer_lenient(a) != normalize_answer(a) for a in answers)
    assert lenient > 0  # the answers where the lenient metric differs (en dashes, non-breaking spaces)
