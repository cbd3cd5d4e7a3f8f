"""Seeded synthetic retrieval episodes, shared by the trainer and the evaluation tasks.

Two formats, each matching its evaluation prompt character for character:

* magic-number needles: the fact `The special magic number for {key} is {value}.` (key: a made-up
  lowercase word, value: a 7-digit number) sits at a sentence boundary of a haystack; the prompt ends with
  `Question: What is the special magic number for {key}?\nAnswer: The special magic number for {key} is`
  and the expected continuation is ` {value}.`;
* multi-document QA (the lost-in-the-middle layout): made-up entities (`Zorvath`) each get one document
  `Document [i](Title: Zorvath) <a KJV sentence or two and one fact sentence>`; the question asks for the
  fact of one of them, e.g. `What is the capital of Zorvath?`, continuation ` Melkin`.

Keys and entity names are split into train and held-out sets by a hash of the name (one in eight is
held out), so evaluation never asks about a name the trainer used. Everything takes a `random.Random`,
so a seed fixes every episode.
"""

from __future__ import annotations

import functools
import random
import re
import zlib

MAGIC_INSTRUCTION = "Read the text below and answer the question at the end."
MULTIDOC_INSTRUCTION = (
    "Write a high-quality answer for the given question using only the provided search results "
    "(some of which might be irrelevant)."
)
# (attribute, fact template, question template); {e} = entity, {a} = answer.
RELATIONS = (
    ("capital", "The capital of {e} is {a}.", "What is the capital of {e}?"),
    ("founder", "{e} was founded by {a}.", "Who founded {e}?"),
    ("river", "The longest river in {e} is called {a}.", "What is the longest river in {e}?"),
    ("language", "The people of {e} speak {a}.", "What language do the people of {e} speak?"),
)
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "kr", "dr", "br", "st")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ai", "ou")
_CODAS = ("", "", "n", "r", "l", "th", "s", "k", "m", "x")


def _is_heldout(name: str) -> bool:
    return zlib.crc32(name.encode()) % 8 == 0


def _check_split(split: str) -> bool:
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    return split == "heldout"


@functools.lru_cache(maxsize=1)
def _made_up_words() -> frozenset[str]:
    """Every two-syllable word with a coda from the name inventory that is not a KJV word (built once)."""
    from meap_bench.data.kjv import kjv_text

    english = set(re.findall(r"\b[a-z]+\b", (kjv_text("train") + kjv_text("heldout")).lower()))
    syllables = [o + v for o in _ONSETS for v in _VOWELS]
    return frozenset({a + b + c for a in syllables for b in syllables for c in _CODAS} - english)


@functools.lru_cache(maxsize=2)
def magic_keys(split: str = "train") -> tuple[str, ...]:
    """Made-up lowercase words (`zorvath`) usable as needle keys: never a KJV word, so a key occurs
    nowhere in a KJV haystack but in its fact (an English key does, and then the words that follow it
    there compete with the value)."""
    heldout = _check_split(split)
    return tuple(sorted(w for w in _made_up_words() if _is_heldout(w) == heldout))


def magic_value(rng: random.Random) -> str:
    return str(rng.randint(1_000_000, 9_999_999))


def magic_fact(key: str, value: str) -> str:
    return f"The special magic number for {key} is {value}."


def magic_query(key: str) -> str:
    """The question and the answer's lead-in; the continuation is f" {value}."."""
    return f"Question: What is the special magic number for {key}?\nAnswer: The special magic number for {key} is"


def made_up_name(rng: random.Random, split: str = "train") -> str:
    """A pronounceable invented name (`Zorvath`) of the given split."""
    heldout = _check_split(split)
    while True:
        syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3))]
        name = ("".join(syllables) + rng.choice(_CODAS)).capitalize()
        if _is_heldout(name) == heldout:
            return name


def haystack(rng: random.Random, sentences: list[str], n_chars: int) -> list[str]:
    """Consecutive sentences from a random start, at least n_chars in all (wrapping around)."""
    out, total, i = [], 0, rng.randrange(len(sentences))
    while total < n_chars:
        out.append(sentences[i % len(sentences)])
        total += len(out[-1]) + 1
        i += 1
    return out


def insert_at_depth(parts: list[str], fact: str, depth: float) -> list[str]:
    """Insert `fact` at the sentence boundary nearest to `depth` (0 = first, 1 = last)."""
    at = round(depth * len(parts))
    return parts[:at] + [fact] + parts[at:]


def magic_prompt(parts: list[str], key: str, value: str, depth: float, instruction: bool = True) -> tuple[str, str]:
    """One evaluation-format needle prompt and its expected continuation."""
    text = " ".join(insert_at_depth(parts, magic_fact(key, value), depth))
    head = f"{MAGIC_INSTRUCTION}\n\n" if instruction else ""
    return f"{head}{text}\n\n{magic_query(key)}", f" {value}."


def magic_episode(rng: random.Random, sentences: list[str], n_chars: int, split: str = "train") -> str:
    """A training episode: 1-4 facts at random depths, then 1-4 queries answered in turn."""
    keys = rng.sample(magic_keys(split), rng.randint(1, 4))
    values = [magic_value(rng) for _ in keys]
    parts = haystack(rng, sentences, n_chars)
    for key, value in zip(keys, values, strict=True):
        parts = insert_at_depth(parts, magic_fact(key, value), rng.random())
    order = rng.sample(range(len(keys)), rng.randint(1, len(keys)))
    queries = "\n\n".join(f"{magic_query(keys[i])} {values[i]}." for i in order)
    head = f"{MAGIC_INSTRUCTION}\n\n" if rng.random() < 0.5 else ""
    return f"{head}{' '.join(parts)}\n\n{queries}"


def copy_episode(rng: random.Random, n_words: int, split: str = "train") -> str:
    """Copy practice that no memorised text can answer: random words (with some 7-digit numbers)
    repeated verbatim, or a key: value list followed by lookups. It makes induction (in-context
    copying) pay off early, which retrieval builds on."""
    keys = magic_keys(split)
    if rng.random() < 0.5:
        words = [magic_value(rng) if rng.random() < 0.15 else rng.choice(keys) for _ in range(n_words)]
        return f"{' '.join(words)}\n{' '.join(words)}"
    pairs = [(k, magic_value(rng)) for k in rng.sample(keys, max(2, n_words // 3))]
    asked = rng.sample(pairs, rng.randint(1, len(pairs)))
    return "\n".join(f"{k}: {v}" for k, v in pairs) + "\n\n" + "\n".join(f"{k}? {v}" for k, v in asked)


def multidoc_example(
    rng: random.Random,
    sentences: list[str],
    n_docs: int,
    gold_position: int,
    split: str = "heldout",
    filler_sentences: int = 2,
    max_sentence_chars: int = 300,
) -> dict:
    """A lost-in-the-middle style example: `n_docs` documents about distinct made-up entities, the
    gold one at `gold_position` (1-based); returns prompt, answer (no leading space), question and
    the documents as (title, text) pairs. Distractors mostly share the gold relation. Each document
    holds at most `filler_sentences` filler sentences shorter than `max_sentence_chars` (smaller values
    make shorter documents; the random draws, and so the entities and facts, do not change)."""
    if not 1 <= gold_position <= n_docs:
        raise ValueError(f"gold_position must be in 1..{n_docs}, not {gold_position}")
    names: list[str] = []
    while len(names) < n_docs:
        name = made_up_name(rng, split)
        if name not in names:
            names.append(name)
    gold = rng.randrange(len(RELATIONS))
    docs, question, answer = [], "", ""
    for i, entity in enumerate(names, start=1):
        rel = gold if (i == gold_position or rng.random() < 0.7) else rng.randrange(len(RELATIONS))
        _, fact_t, question_t = RELATIONS[rel]
        value = made_up_name(rng, split)
        fact = fact_t.format(e=entity, a=value)
        filler = [s for s in haystack(rng, sentences, rng.randint(60, 240)) if len(s) < max_sentence_chars][
            :filler_sentences
        ]
        parts = [fact, *filler] if rng.random() < 0.5 else [*filler, fact]
        docs.append((entity, " ".join(parts)))
        if i == gold_position:
            question, answer = question_t.format(e=entity), value
    lines = "\n".join(f"Document [{i}](Title: {t}) {x}" for i, (t, x) in enumerate(docs, start=1))
    prompt = f"{MULTIDOC_INSTRUCTION}\n\n{lines}\n\nQuestion: {question}\nAnswer:"
    return {"prompt": prompt, "answer": answer, "question": question, "documents": docs}


def multidoc_episode(rng: random.Random, sentences: list[str], n_docs: int, split: str = "train") -> str:
    """A training episode: a multi-document prompt followed by its answer."""
    ex = multidoc_example(rng, sentences, n_docs, rng.randint(1, n_docs), split)
    return f"{ex['prompt']} {ex['answer']}"
