"""What a task is: a config schema, samples built for one checkpoint's tokenizer, and a scorer.

Tasks build token-exact requests and score outputs; they never load models or draw figures."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from transformers import BatchEncoding, PreTrainedTokenizerBase

from meap_bench.backends.base import AttnOutput, AttnRequest, Backend, LLOutput
from meap_bench.config import Strict
from meap_bench.records import Record, sha256_json
from meap_bench.report_spec import ReportSpec
from meap_bench.scoring.scorers import Score


@dataclass(frozen=True)
class ModelContext:
    """What a task may know of a checkpoint: its tokenizer, context size and prompt style."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    chat_template: bool = False


@dataclass
class Sample:
    """One prompt of one cell. `prompt_ids is None` means the cell was skipped (see skip_reason)."""

    sample_id: str
    cell: dict[str, Any]
    target: str
    item_id: str = ""  # the item this prompt asks about, shared across cells (defaults to sample_id)
    prompt_text: str | None = None
    prompt_ids: list[int] | None = None
    skip_reason: str | None = None
    max_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    choices: list[list[int]] = field(default_factory=list)  # continuations scored after the prompt, gold first
    target_offset: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    attention: AttnRequest | None = None  # attention summaries asked for instead of text or loglikelihoods
    scorer: dict[str, Any] | None = None  # identity of a model-calling scorer (a judge): part of the resume key

    def __post_init__(self) -> None:
        self.item_id = self.item_id or self.sample_id

    @property
    def request_sha256(self) -> str:
        if self.prompt_ids is None:
            return sha256_json(["skipped", self.skip_reason])
        request = [self.prompt_ids, self.max_new_tokens, list(self.stop), self.choices]
        if self.attention is not None:
            request.append([self.attention.input_ids, list(self.attention.queries), self.attention.spans])
        if self.scorer is not None:
            request.append({"scorer": self.scorer})
        return sha256_json(request)

    @property
    def prompt_sha256(self) -> str | None:
        return hashlib.sha256(self.prompt_text.encode()).hexdigest() if self.prompt_text is not None else None


class TaskConfig(Strict):
    """Fields every task config has."""

    headline_metric: str = "contains"


class Task:
    """Base class of the sample-based tasks (needle, mdqa, kv)."""

    name: ClassVar[str]
    config_model: ClassVar[type[TaskConfig]]
    requires: ClassVar[frozenset[str]] = frozenset()  # backend capabilities the task needs (base.ATTENTION)
    report: ClassVar[ReportSpec] = ReportSpec()  # figures and tables beyond the common ones (report_spec.py)

    def __init__(self, config: TaskConfig, seed: int, limit: int | None = None) -> None:
        self.config = config
        self.seed = seed
        self.limit = limit

    @classmethod
    def report_spec(cls, config: dict[str, Any]) -> ReportSpec:
        """The task's report for a config as run.json holds it (JSON): `report`, unless the config changes it."""
        return cls.report

    def samples(self, model: ModelContext) -> Iterator[Sample]:
        raise NotImplementedError

    def score(self, sample: Sample, output: str | None, choices: list[LLOutput]) -> dict[str, float]:
        raise NotImplementedError

    def score_batch(self, samples: list[Sample], outputs: list[str | None], choices: list[list[LLOutput]]
                    ) -> list[Score]:
        """Scores of a chunk of samples; a task whose scorer calls a model (a judge) batches it here."""
        return [Score(self.score(s, o, c)) for s, o, c in zip(samples, outputs, choices, strict=True)]

    def score_attention(self, sample: Sample, summary: AttnOutput) -> dict[str, float]:
        """Scores of a sample that asked for attention summaries (it may add compact arrays to its meta)."""
        raise NotImplementedError


class DirectTask(Task):
    """A task that drives the backend itself (e.g. through lm-eval) instead of yielding samples: it writes
    its own records (`base` holds the run/checkpoint fields every record carries) and skips the work
    whose record keys are already in `done`."""

    def evaluate(self, backend: Backend, base: dict[str, Any], run_dir: Path, done: set,
                 write: Callable[[list[Record]], None]) -> None:
        raise NotImplementedError


def encode_prompt(model: ModelContext, user_text: str, answer_prefix: str) -> tuple[str, Any]:
    """The full prompt text and its encoding (with offsets). Base models get a completion prompt ending
    in the answer prefix; chat checkpoints get their chat template with the answer prefix after it."""
    tok = model.tokenizer
    if model.chat_template:
        head = tok.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                       add_generation_prompt=True)
        text = head + answer_prefix
        return text, tok(text, add_special_tokens=False, return_offsets_mapping=True)
    text = f"{user_text}\n{answer_prefix}" if answer_prefix else user_text
    return text, tok(text, return_offsets_mapping=True)


def continuation_ids(tokenizer: PreTrainedTokenizerBase, prompt_text: str, prompt_ids: list[int],
                     continuation: str, chat: bool = False) -> list[int]:
    """Ids of `continuation` as the model would see it after the prompt: encode prompt + continuation
    together and keep the tail (as lm-eval does), so merges at the boundary match real text."""
    whole = tokenizer(prompt_text + continuation, add_special_tokens=not chat)["input_ids"]
    if whole[: len(prompt_ids)] == prompt_ids and len(whole) > len(prompt_ids):
        return whole[len(prompt_ids):]
    return tokenizer(continuation, add_special_tokens=False)["input_ids"]


def token_spans(enc: BatchEncoding, char_spans: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    """Half-open token ranges of half-open character ranges of the encoded text: the fewest tokens that cover each
    range (a token straddling a boundary belongs to the span). Empty ranges are left out."""
    spans = {}
    for name, (start, end) in char_spans.items():
        if end <= start:
            continue
        first = next(enc.char_to_token(c) for c in range(start, end) if enc.char_to_token(c) is not None)
        last = next(enc.char_to_token(c) for c in range(end - 1, start - 1, -1) if enc.char_to_token(c) is not None)
        spans[name] = [first, last + 1]
    return spans
