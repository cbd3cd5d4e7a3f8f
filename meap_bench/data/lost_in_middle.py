"""Loaders for the lost-in-the-middle data (Liu et al., nelson-liu/lost-in-the-middle) and the synthetic
multi-document questions of the default pair.

Every source becomes the same shape: a question (or key) with its gold passage (or pair) and an ordered
list of distractors; a cell with N documents and the gold at position K takes the first N-1 distractors
and puts the gold at index K-1 (see `meap_bench.tasks.positions.place`). This is how the official files
are built: a question's distractors are the same at every gold position, and the N-document distractors
are the first N-1 of the 30-document ones, so one 30-document file yields every (N <= 30, K) cell.

Files are read from `data_dir` when given (searched recursively by file name), else downloaded once from
GitHub into `<cache>/lost-in-the-middle/` and checked against `manifest.json` there: the hashes pinned
below, or for other files the hash recorded on first download (trust on first use)."""

from __future__ import annotations

import functools
import gzip
import json
import random
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meap_bench.data.cache import cache_dir, sha256_file
from meap_bench.errors import UserError
from meap_bench.scoring.text import normalize_answer_lenient

REPO_URL = "https://github.com/nelson-liu/lost-in-the-middle/raw/main/"
ORACLE_FILE = "nq-open-oracle.jsonl.gz"
MULTIDOC_FILE = re.compile(r"^nq-open-(\d+)_total_documents_gold_at_(\d+)\.jsonl\.gz$")
KV_FILE = re.compile(r"^kv-retrieval-(\d+)_keys\.jsonl\.gz$")
PINNED_SHA256 = {  # from ../shared/data/README.md (upstream commit 29b8a6d0)
    "nq-open-oracle.jsonl.gz": "6a7f72b846f663a133ef952244e5a4e43f06bcf190afe34e8fbe687ce0d1653e",
    "kv-retrieval-75_keys.jsonl.gz": "eb6d61fc3473349f2b86df76757c6ab659cc929d907d24caf1c69928e03f6203",
}
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class Passage:
    title: str
    text: str


@dataclass(frozen=True)
class QAItem:
    """One question: its answers, gold passage and distractors in their fixed order."""

    qid: str
    question: str
    answers: tuple[str, ...]
    gold: Passage
    distractors: tuple[Passage, ...]


@dataclass(frozen=True)
class KVItem:
    """One key-value query: the gold pair and the other pairs in their fixed order."""

    qid: str
    key: str
    value: str
    distractors: tuple[tuple[str, str], ...]


def remote_path(name: str) -> str:
    """Where a file lives in the upstream repository."""
    if name == ORACLE_FILE:
        return f"qa_data/{name}"
    if match := MULTIDOC_FILE.match(name):
        return f"qa_data/{match.group(1)}_total_documents/{name}"
    if KV_FILE.match(name):
        return f"kv_retrieval_data/{name}"
    raise UserError(f"lost-in-the-middle: unknown file name '{name}'")


def read_manifest(folder: Path) -> dict[str, str]:
    path = folder / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def download(name: str) -> Path:
    """The cached copy of an upstream file, downloaded once and verified by sha256."""
    folder = cache_dir() / "lost-in-the-middle"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    manifest = read_manifest(folder)
    expected = PINNED_SHA256.get(name) or manifest.get(name)
    if not target.is_file():
        url = REPO_URL + remote_path(name)
        partial = target.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
        except OSError as err:
            partial.unlink(missing_ok=True)
            reason = getattr(err, "reason", None) or err
            task = "kv" if KV_FILE.match(name) else "mdqa"
            raise UserError(f"could not download {url} ({reason}); put the file in a folder and pass "
                            f"--set {task}.data_dir=FOLDER, or copy it to {folder}") from None
        partial.replace(target)
    actual = sha256_file(target)
    if expected and actual != expected:
        raise UserError(f"{target}: sha256 {actual} does not match the expected {expected}; delete the file "
                        f"and retry")
    if manifest.get(name) != actual:
        manifest[name] = actual
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def find_files(data_dir: Path, pattern: re.Pattern[str]) -> list[Path]:
    if not data_dir.is_dir():
        raise UserError(f"data_dir {data_dir}: not a folder; point it at the folder holding the "
                        f"lost-in-the-middle files")
    return sorted(p for p in data_dir.rglob("*.jsonl.gz") if pattern.match(p.name))


def read_jsonl_gz(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        raise UserError(f"{path}: line {number} is not valid JSON; re-download the file") from None
    except (OSError, EOFError) as err:
        raise UserError(f"{path}: cannot read as gzipped JSON lines ({err}); re-download the file") from None


def passage(ctx: dict[str, Any], path: Path) -> Passage:
    try:
        return Passage(str(ctx["title"]), str(ctx["text"]))
    except (KeyError, TypeError):
        raise UserError(f"{path}: a ctxs entry lacks title/text; expected the lost-in-the-middle QA format") from None


def qa_record(record: dict[str, Any], path: Path) -> tuple[str, tuple[str, ...], list[dict[str, Any]]]:
    try:
        return str(record["question"]), tuple(str(a) for a in record["answers"]), list(record["ctxs"])
    except (KeyError, TypeError):
        raise UserError(f"{path}: records need question, answers and ctxs (lost-in-the-middle QA format)") from None


def multidoc_file(data_dir: Path | None) -> Path:
    """The multi-document file with the most documents in `data_dir` (gold at the lowest index), or
    the downloaded 30-document file."""
    if data_dir is None:
        return download("nq-open-30_total_documents_gold_at_0.jsonl.gz")
    found = find_files(data_dir, MULTIDOC_FILE)
    if not found:
        raise UserError(f"data_dir {data_dir}: no nq-open-N_total_documents_gold_at_K.jsonl.gz file there; "
                        f"add one (ideally the 30-document one) or use source nq-oracle")

    def rank(p: Path) -> tuple[int, int]:
        match = MULTIDOC_FILE.match(p.name)
        assert match
        return (-int(match.group(1)), int(match.group(2)))

    return min(found, key=rank)


@functools.lru_cache(maxsize=4)
def load_nq(data_dir: Path | None) -> tuple[QAItem, ...]:
    """Questions of the official multi-document file: gold passage (`isgold`) and the other passages in
    file order as distractors."""
    path = multidoc_file(data_dir)
    items = []
    for index, record in enumerate(read_jsonl_gz(path)):
        question, answers, ctxs = qa_record(record, path)
        golds = [i for i, c in enumerate(ctxs) if c.get("isgold")]
        if len(golds) != 1:
            raise UserError(f"{path}: record {index + 1} has {len(golds)} gold passages (isgold); expected one")
        gold = passage(ctxs[golds[0]], path)
        others = tuple(passage(c, path) for i, c in enumerate(ctxs) if i != golds[0])
        items.append(QAItem(f"nq{index}", question, answers, gold, others))
    return tuple(items)


def oracle_file(data_dir: Path | None) -> Path:
    if data_dir is None:
        return download(ORACLE_FILE)
    found = [p for p in find_files(data_dir, re.compile(re.escape(ORACLE_FILE) + "$"))]
    if not found:
        raise UserError(f"data_dir {data_dir}: no {ORACLE_FILE} there; add it or leave data_dir unset to download")
    return found[0]


def contains_any(text: str, answers: tuple[str, ...]) -> bool:
    """Whether `text` holds an answer, leniently (unicode folded): a distractor must hold none."""
    normalized = normalize_answer_lenient(text)
    return any(gold and gold in normalized for gold in map(normalize_answer_lenient, answers))


@functools.lru_cache(maxsize=4)
def oracle_rows(data_dir: Path | None) -> tuple[tuple[str, tuple[str, ...], Passage], ...]:
    """(question, answers, gold passage) of every record of the oracle file."""
    path = oracle_file(data_dir)
    rows = []
    for index, record in enumerate(read_jsonl_gz(path)):
        question, answers, ctxs = qa_record(record, path)
        if not ctxs:
            raise UserError(f"{path}: record {index + 1} has no ctxs; expected the oracle passage")
        rows.append((question, answers, passage(ctxs[0], path)))
    return tuple(rows)


def load_nq_oracle(data_dir: Path | None, n_distractors: int, seed: int, indices: list[int]) -> list[QAItem]:
    """The easier random-distractor variant for the questions at `indices`: each question's gold passage
    plus `n_distractors` gold passages of other questions (distinct, seeded per question, none
    containing any of this question's answers)."""
    rows = oracle_rows(data_dir)
    pool = list(dict.fromkeys(p for _, _, p in rows))  # distinct passages, in file order
    if len(pool) <= 2 * n_distractors:
        raise UserError(f"{ORACLE_FILE}: {len(pool)} passages are too few for {n_distractors} distractors each")
    items = []
    for index in indices:
        question, answers, gold = rows[index]
        rng = random.Random(f"{seed}:nq-oracle:{index}")
        chosen: list[Passage] = []
        for _ in range(50 * len(pool)):
            if len(chosen) == n_distractors:
                break
            candidate = pool[rng.randrange(len(pool))]
            if candidate != gold and candidate not in chosen and not contains_any(
                    f"{candidate.title} {candidate.text}", answers):
                chosen.append(candidate)
        if len(chosen) < n_distractors:
            raise UserError(f"{ORACLE_FILE}: question {index + 1} has too few answer-free distractors")
        items.append(QAItem(f"oracle{index}", question, answers, gold, tuple(chosen)))
    return items


def pick_indices(total: int, count: int, seed: int) -> list[int]:
    """`count` of `total` question indices: all of them when count >= total, else a seeded sample in
    file order."""
    if count >= total:
        return list(range(total))
    return sorted(random.Random(f"{seed}:questions").sample(range(total), count))


def kv_file(data_dir: Path | None, name: str) -> Path:
    if data_dir is None:
        return download(name)
    found = [p for p in find_files(data_dir, KV_FILE) if p.name == name]
    if not found:
        raise UserError(f"data_dir {data_dir}: no {name} there; add it or leave data_dir unset to download")
    return found[0]


@functools.lru_cache(maxsize=4)
def load_kv(data_dir: Path | None, name: str) -> tuple[KVItem, ...]:
    """Official key-value records: the queried pair and the other pairs in file order."""
    path = kv_file(data_dir, name)
    items = []
    for index, record in enumerate(read_jsonl_gz(path)):
        try:
            pairs = [(str(k), str(v)) for k, v in record["ordered_kv_records"]]
            key, value = str(record["key"]), str(record["value"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: records need ordered_kv_records, key and value") from None
        if pairs.count((key, value)) != 1:
            raise UserError(f"{path}: record {index + 1} does not hold its key-value pair exactly once")
        items.append(KVItem(f"kv{index}", key, value, tuple(p for p in pairs if p != (key, value))))
    return tuple(items)


def synthetic_qa(count: int, n_distractors: int, seed: int, filler_sentences: int, max_sentence_chars: int
                 ) -> list[QAItem]:
    """Held-out synthetic questions in the default pair's training format: one `multidoc_example` per
    question (gold drawn first), its other documents kept in order as the distractors."""
    from meap_bench.data.kjv import kjv_sentences
    from meap_bench.data.synthetic import multidoc_example

    sentences = kjv_sentences("heldout")
    items = []
    for index in range(count):
        rng = random.Random(f"{seed}:mdqa-synthetic:{index}")
        ex = multidoc_example(rng, sentences, n_distractors + 1, 1, split="heldout",
                              filler_sentences=filler_sentences, max_sentence_chars=max_sentence_chars)
        gold, *others = (Passage(title, text) for title, text in ex["documents"])
        items.append(QAItem(f"syn{index}", ex["question"], (ex["answer"],), gold, tuple(others)))
    return items


def random_uuid(rng: random.Random) -> str:
    """A version-4 style UUID string from a seeded generator."""
    import uuid

    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def synthetic_kv(count: int, n_distractors: int, seed: int) -> list[KVItem]:
    """Seeded UUID key-value records (all keys and values distinct)."""
    items = []
    for index in range(count):
        rng = random.Random(f"{seed}:kv-synthetic:{index}")
        seen: set[str] = set()
        uuids: list[str] = []
        while len(uuids) < 2 * (n_distractors + 1):
            u = random_uuid(rng)
            if u not in seen:
                seen.add(u)
                uuids.append(u)
        pairs = list(zip(uuids[0::2], uuids[1::2], strict=True))
        (key, value), others = pairs[0], tuple(pairs[1:])
        items.append(KVItem(f"kvsyn{index}", key, value, others))
    return items
