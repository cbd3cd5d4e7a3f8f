"""Text metrics used by the retrieval tasks (normalisation as in lost-in-the-middle / SQuAD)."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, delete punctuation, drop the articles a/an/the, collapse white space, as the reference
    does ("U.S.A." -> "usa"); NFKC first, and unicode punctuation counts as punctuation."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in PUNCTUATION and not unicodedata.category(ch).startswith("P"))
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


def first_line(output: str) -> str:
    """The literal first line of a model output, as the reference scores it (`output.split("\\n")[0]`)."""
    return output.split("\n")[0]


def best_subspan_em(prediction: str, answers: list[str]) -> float:
    """1.0 if any normalised gold answer occurs inside the normalised first line of the prediction."""
    normalized = normalize_answer(first_line(prediction))
    return float(any(normalize_answer(a) and normalize_answer(a) in normalized for a in answers))


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
