"""Text metrics used by the retrieval tasks.

`normalize_answer` and `best_subspan_em` are lost-in-the-middle's (`src/lost_in_the_middle/metrics.py`), to
the character, so that numbers compare with published ones; `*_lenient` variants additionally fold
unicode (NFKC) and unicode punctuation ("1979–80" with an en dash matches "1979-80")."""

from __future__ import annotations

import string
import unicodedata
from collections import Counter

import regex

PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The reference (SQuAD) normalisation: lower case, delete ASCII `string.punctuation`, replace the
    articles a/an/the by a space, collapse white space ("U.S.A." -> "usa"; an en dash is kept)."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(regex.sub(r"\b(a|an|the)\b", " ", text).split())


def normalize_answer_lenient(text: str) -> str:
    """`normalize_answer` after NFKC, with every unicode punctuation character deleted too."""
    text = "".join(ch for ch in unicodedata.normalize("NFKC", text) if not unicodedata.category(ch).startswith("P"))
    return normalize_answer(text)


def first_line(output: str) -> str:
    """The first line of a model output, as the reference scores it (`output.split("\\n")[0].strip()`)."""
    return output.split("\n")[0].strip()


def best_subspan_em(prediction: str, answers: list[str]) -> float:
    """The reference metric on the first line: 1.0 if any normalised gold answer occurs inside the
    normalised prediction (an answer that normalises to "" matches anything, as in the reference)."""
    normalized = normalize_answer(first_line(prediction)).lower()
    return float(any(normalize_answer(a).lower() in normalized for a in answers))


def best_subspan_em_lenient(prediction: str, answers: list[str]) -> float:
    """`best_subspan_em` with `normalize_answer_lenient`; answers that normalise to "" never match."""
    normalized = normalize_answer_lenient(first_line(prediction))
    return float(any(gold and gold in normalized for gold in map(normalize_answer_lenient, answers)))


def contains(prediction: str, answer: str) -> float:
    """`best_subspan_em` for one answer: the needle task's headline metric."""
    return best_subspan_em(prediction, [answer])


def rouge1_recall(prediction: str, reference: str) -> float:
    """Share of the reference's unigrams (clipped counts) found in the prediction's first line."""
    ref = Counter(normalize_answer(reference).split())
    if not ref:
        return 0.0
    pred = Counter(normalize_answer(first_line(prediction)).split())
    return sum(min(count, pred[word]) for word, count in ref.items()) / sum(ref.values())
