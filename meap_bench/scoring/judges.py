"""Faithfulness judges: does an output say only what its document supports?

Three judges share one interface (`judge(items) -> verdicts`) and one verdict parser:
- `lexical`: a deterministic offline proxy (share of the output's content words, numbers and names found in the
  document, against a threshold); labelled a proxy wherever it is reported.
- `openai`: any OpenAI-compatible chat-completions endpoint, through the official `openai` client (its timeouts
  and retries with exponential backoff on 429/5xx/timeouts), a thread pool for concurrency, token and cost
  accounting, and a cache so no request is ever paid twice. The key is read from an environment variable and
  never written anywhere.
- `local`: a checkpoint of checkpoints.yaml answering the same judge prompt through our own backend.

An answer without a clear conclusion is `unjudged` (faithful None): counted and shown, never true or false."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import regex

JUDGE_PROMPT = """You will check a {kind} against the document it was written from.

Document:
{document}
{question}
Reference {kind} (one acceptable answer, written by a person):
{reference}

Proposed {kind}:
{output}

Is the proposed {kind} fully supported by the document? Every claim it makes must be stated in the document or \
follow directly from it; claims that contradict the document or add information not in it are unsupported. \
The reference is for comparison only: the proposed {kind} may differ from it and still be faithful.
First write "Problematic spans:" followed by the unsupported spans of the proposed {kind} as a list of quoted \
strings, or "none". Then end with exactly one line "Conclusion: True" if the proposed {kind} is fully supported \
by the document, or "Conclusion: False" if it is not."""
PROMPT_SHA256 = hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()

TRUE_WORDS = {"true", "yes", "faithful", "supported"}
FALSE_WORDS = {"false", "no", "unfaithful", "unsupported", "not faithful", "not supported"}
CONCLUSION = regex.compile(
    r"(?im)^[\s*#>_-]*(?:final\s+)?(?:conclusion|verdict|answer|judgement|judgment)\s*[:=\-]\s*[*_\"'`]*\s*"
    r"(not faithful|not supported|true|false|yes|no|faithful|unfaithful|supported|unsupported)\b")
SPANS = regex.compile(r"(?is)problematic spans\s*:\s*(.*?)(?=^[\s*#>_-]*(?:final\s+)?conclusion|\Z)", regex.M)


@dataclass(frozen=True)
class JudgeItem:
    document: str
    reference: str
    output: str
    question: str | None = None

    @property
    def kind(self) -> str:
        return "answer" if self.question else "summary"

    def prompt(self) -> str:
        question = f"\nQuestion:\n{self.question}\n" if self.question else ""
        return JUDGE_PROMPT.format(kind=self.kind, document=self.document, question=question,
                                   reference=self.reference, output=self.output)


@dataclass
class Verdict:
    faithful: bool | None  # None: unjudged
    raw: str  # the judge's answer as given (the lexical proxy: its computation)
    reason: str | None = None  # why unjudged
    spans: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    final: bool = True  # False: the judge could not be asked (an API fault); ask again on the next run


def parse_verdict(raw: str) -> tuple[bool | None, list[str]]:
    """(faithful, problematic spans) of a judge's answer. Strict: the last `Conclusion: True/False` line (or a
    bare True/False answer) decides; tolerant: case, markdown emphasis and synonyms (yes/no, faithful/unfaithful)
    are accepted. Anything else is None (unjudged)."""
    found = CONCLUSION.findall(raw)
    word = found[-1].lower() if found else raw.strip().strip("*_.`'\" ").lower()
    faithful = True if word in TRUE_WORDS else False if word in FALSE_WORDS else None
    spans_match = SPANS.search(raw)
    spans = []
    if spans_match:
        spans = [s for s in regex.findall(r'"([^"]+)"', spans_match.group(1)) if s.strip()]
    return faithful, spans


class Judge(Protocol):
    name: str

    @property
    def identity(self) -> dict[str, Any]:
        """What makes two verdicts comparable; folded into each sample's request hash."""
        ...

    def judge(self, items: list[JudgeItem]) -> list[Verdict]: ...


def unjudged_if_empty(item: JudgeItem) -> Verdict | None:
    """An empty output claims nothing: it is reported as unjudged rather than trivially faithful."""
    return Verdict(None, "", reason="empty output") if not item.output.strip() else None


STOPWORDS = frozenset("""a an the and or but if then than so of to in on at by for from with without into onto over
under about after before between during as is are was were be been being it its it's this that these those there
here he she they them his her their we our you your i me my not no yes do does did done has have had having will
would can could should may might must shall also just only very more most such some any all each other which who
whom whose what when where why how one two three said says say""".split())
WORD = regex.compile(r"\p{L}[\p{L}'-]*|\d[\d,.]*\d|\d")


def content_tokens(text: str) -> list[str]:
    """Content words (lower-cased, stop words and words under 3 letters left out), numbers (without thousands
    separators) and capitalised names: what a summary claims."""
    tokens = []
    for word in WORD.findall(text):
        if word[0].isdigit():
            tokens.append(word.replace(",", "").rstrip("."))
        elif len(word) > 2 and word.lower() not in STOPWORDS:
            tokens.append(word.lower())
    return tokens


class LexicalJudge:
    """Offline proxy: faithful when at least `threshold` of the output's content tokens occur in the document."""

    name = "lexical"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    @property
    def identity(self) -> dict[str, Any]:
        return {"judge": self.name, "version": 1, "threshold": self.threshold, "proxy": True}

    def judge(self, items: list[JudgeItem]) -> list[Verdict]:
        return [unjudged_if_empty(item) or self.one(item) for item in items]

    def one(self, item: JudgeItem) -> Verdict:
        claimed = content_tokens(item.output)
        if not claimed:
            return Verdict(None, "no content words, numbers or names", reason="nothing to check")
        known = set(content_tokens(item.document)) | set(content_tokens(item.question or ""))
        missing = [t for t in claimed if t not in known]
        support = 1 - len(missing) / len(claimed)
        raw = f"support {support:.3f} ({len(claimed) - len(missing)}/{len(claimed)}), threshold {self.threshold}"
        return Verdict(support >= self.threshold, raw, spans=sorted(set(missing)),
                       metadata={"lexical_support": round(support, 4)})


class JudgeCache:
    """Verdicts already paid for, keyed by (judge model, judge prompt sha256, sha256 of the filled request:
    document, question, reference and output): an interrupted or repeated run asks each question once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False)
        with self.lock, self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS verdicts (model TEXT, prompt_sha256 TEXT, request_sha256 "
                            "TEXT, raw TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, "
                            "PRIMARY KEY (model, prompt_sha256, request_sha256))")

    def get(self, key: tuple[str, str, str]) -> tuple[str, int, int] | None:
        with self.lock:
            row = self.db.execute("SELECT raw, prompt_tokens, completion_tokens FROM verdicts WHERE model = ? AND "
                                  "prompt_sha256 = ? AND request_sha256 = ?", key).fetchone()
        return tuple(row) if row else None

    def put(self, key: tuple[str, str, str], raw: str, prompt_tokens: int, completion_tokens: int) -> None:
        with self.lock, self.db:
            self.db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
                            (*key, raw, prompt_tokens, completion_tokens))


@dataclass(frozen=True)
class OpenAISettings:
    base_url: str
    model: str
    api_key_env: str
    timeout: float
    max_retries: int
    concurrency: int
    max_tokens: int
    usd_per_mtok_in: float
    usd_per_mtok_out: float
    cache: Path


class OpenAIJudge:
    """A chat-completions judge (temperature 0) on the official client, which retries 429, 5xx, connection
    errors and timeouts with exponential backoff. A request that still fails gives a verdict that is not final:
    neither cached nor recorded, so the next run asks again."""

    name = "openai"

    def __init__(self, settings: OpenAISettings) -> None:
        from openai import OpenAI

        from meap_bench.errors import UserError

        key = os.environ.get(settings.api_key_env)
        if not key:
            raise UserError(f"hallucination.judge=openai: the environment variable {settings.api_key_env} holds no "
                            f"API key; export it (it is read from the environment and never written), or name "
                            f"another with --set hallucination.openai.api_key_env=NAME")
        self.settings = settings
        self.client = OpenAI(base_url=settings.base_url, api_key=key, timeout=settings.timeout,
                             max_retries=settings.max_retries)
        self.cache = JudgeCache(settings.cache)

    @property
    def identity(self) -> dict[str, Any]:
        return {"judge": self.name, "version": 1, "model": self.settings.model, "base_url": self.settings.base_url,
                "prompt_sha256": PROMPT_SHA256}

    def judge(self, items: list[JudgeItem]) -> list[Verdict]:
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            return list(pool.map(lambda item: unjudged_if_empty(item) or self.one(item), items))

    def one(self, item: JudgeItem) -> Verdict:
        import openai

        prompt = item.prompt()
        key = (self.settings.model, PROMPT_SHA256, hashlib.sha256(prompt.encode()).hexdigest())
        hit = self.cache.get(key)
        if hit is None:
            try:
                response = self.client.chat.completions.create(
                    model=self.settings.model, messages=[{"role": "user", "content": prompt}], temperature=0,
                    max_tokens=self.settings.max_tokens)
            except openai.APIError as err:
                status = getattr(err, "status_code", None)
                return Verdict(None, "", reason=f"judge request failed: {type(err).__name__}"
                               + (f" (HTTP {status})" if status else ""), final=False)
            usage = response.usage
            hit = (response.choices[0].message.content or "" if response.choices else "",
                   usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
            self.cache.put(key, *hit)
            cached = False
        else:
            cached = True
        raw, prompt_tokens, completion_tokens = hit
        faithful, spans = parse_verdict(raw)
        prices = self.settings
        cost = (prompt_tokens * prices.usd_per_mtok_in + completion_tokens * prices.usd_per_mtok_out) / 1e6
        return Verdict(faithful, raw, reason=None if faithful is not None else "unparsable judge answer", spans=spans,
                       metadata={"judge_tokens": {"prompt": prompt_tokens, "completion": completion_tokens},
                                 "judge_usd": round(cost, 6), "judge_cached": cached})


class LocalJudge:
    """A checkpoint of checkpoints.yaml as the judge, through our backend: greedy, the judge prompt in completion
    style or its chat template. A judge prompt longer than the judge's context is unjudged, never truncated."""

    name = "local"

    def __init__(self, checkpoint: Any, backend: Any, max_new_tokens: int) -> None:
        self.checkpoint = checkpoint
        self.backend = backend
        self.max_new_tokens = max_new_tokens

    @property
    def identity(self) -> dict[str, Any]:
        return {"judge": self.name, "version": 1, "model": self.checkpoint.name,
                "fingerprint": self.backend.fingerprint, "prompt_sha256": PROMPT_SHA256,
                "max_new_tokens": self.max_new_tokens}

    def encode(self, prompt: str) -> list[int]:
        tok = self.backend.tokenizer
        if self.checkpoint.chat_template:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            return tok(text, add_special_tokens=False)["input_ids"]
        return tok(f"{prompt}\n")["input_ids"]

    def judge(self, items: list[JudgeItem]) -> list[Verdict]:
        from meap_bench.backends.base import GenRequest

        verdicts: list[Verdict | None] = [unjudged_if_empty(item) for item in items]
        asks = {}
        for i, item in enumerate(items):
            ids = self.encode(item.prompt())
            if verdicts[i] is None and len(ids) + self.max_new_tokens > self.backend.max_length:
                verdicts[i] = Verdict(None, "", reason=f"judge prompt of {len(ids)} tokens + {self.max_new_tokens} "
                                                       f"> judge context {self.backend.max_length}")
            elif verdicts[i] is None:
                asks[i] = GenRequest(ids, self.max_new_tokens, ())
        outputs = self.backend.generate(list(asks.values())) if asks else []
        for i, output in zip(asks, outputs, strict=True):
            faithful, spans = parse_verdict(output.text)
            verdicts[i] = Verdict(faithful, output.text, spans=spans,
                                  reason=None if faithful is not None else "unparsable judge answer")
        return verdicts  # type: ignore[return-value]
