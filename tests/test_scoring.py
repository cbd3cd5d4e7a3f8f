"""The multi-document QA metric (best-subspan exact match on the first output line) as a table of cases.

Reference (lost-in-the-middle): lower case, remove punctuation and the articles a/an/the, collapse white
space; 1 if any normalised gold answer is a substring of the normalised first line of the prediction."""

from __future__ import annotations

import pytest

from meap_bench.scoring import best_subspan_em, first_line, normalize_answer

CASES = [
    # (prediction, gold answers, expected score)
    ("Paris", ["Paris"], 1.0),                                   # exact
    ("PARIS", ["paris"], 1.0),                                   # case
    ("The answer is Paris.", ["Paris"], 1.0),                    # sub-span and trailing punctuation
    ("Pari", ["Paris"], 0.0),                                    # a prefix of the answer is not enough
    ("Parisian cafes", ["Paris"], 1.0),                          # substring of the string, not token match
    ("The Beatles", ["Beatles"], 1.0),                           # article in the prediction
    ("Beatles", ["The Beatles"], 1.0),                           # article in the answer
    ("A Tale of Two Cities", ["Tale of Two Cities"], 1.0),       # article a
    ("an apple", ["Apple"], 1.0),                                # article an
    ("Anne", ["Anne"], 1.0),                                     # 'an' inside a word stays
    ("ne", ["Anne"], 0.0),                                       # ... so 'Anne' never becomes 'ne'
    ("the", ["The"], 0.0),                                       # an answer that normalises to '' never matches
    ("Paris, France!", ["Paris France"], 1.0),                   # punctuation between words
    ("  Paris \t France  ", ["Paris France"], 1.0),              # white space collapsed
    ("\u201cParis\u201d", ["Paris"], 1.0),                       # unicode quotation marks
    ("Wilhelm Conrad R\u00f6ntgen", ["Wilhelm Conrad R\u00f6ntgen"], 1.0),  # unicode letters kept
    ("R\u00d6NTGEN", ["r\u00f6ntgen"], 1.0),                     # unicode case
    ("R\u00f6ntgen", ["Rontgen"], 0.0),                          # accents are not stripped
    ("\ufb01ve", ["five"], 1.0),                                 # NFKC: the 'fi' ligature is 'fi'
    ("London", ["Paris", "London"], 1.0),                        # any of several answers
    ("Berlin", ["Paris", "London"], 0.0),                        # none of several answers
    ("Paris\nLondon", ["London"], 0.0),                          # first line only
    ("Paris\nLondon", ["Paris"], 1.0),                           # first line only
    ("Paris is lovely in spring.\n", ["Paris"], 1.0),            # trailing newline
    ("", ["Paris"], 0.0),                                        # empty output
    ("anything at all", [""], 0.0),                              # empty answer never matches
    ("U.S.A.", ["USA"], 1.0),                                    # punctuation is deleted, not spaced
    ("\nParis", ["Paris"], 0.0),                                 # the literal first line, even if empty
]


@pytest.mark.parametrize(("prediction", "answers", "expected"), CASES)
def test_best_subspan_em_table(prediction: str, answers: list[str], expected: float) -> None:
    assert best_subspan_em(prediction, answers) == expected


def test_normalisation_and_first_line() -> None:
    assert normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
    assert normalize_answer("an A the") == ""
    assert first_line("\n  \nfirst\nsecond") == ""
    assert first_line("first\nsecond") == "first"
    assert first_line("") == ""
