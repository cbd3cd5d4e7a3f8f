"""The backend protocol every task uses: token ids in, text or loglikelihoods out.

Tasks tokenise once with the checkpoint's tokenizer, so every backend sees identical ids. Batching,
sorting and out-of-memory back-off live inside a backend, never in tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class GenRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenOutput:
    text: str
    token_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class LLRequest:
    context_ids: list[int]
    continuation_ids: list[int]


@dataclass(frozen=True)
class LLOutput:
    logprob: float
    is_greedy: bool


class Backend(Protocol):
    """One loaded checkpoint, shared by every task of a run."""

    name: str
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    fingerprint: str

    def generate(self, requests: list[GenRequest]) -> list[GenOutput]:
        """Greedy continuation of each prompt, cut at the first stop string."""
        ...

    def loglikelihood(self, requests: list[LLRequest]) -> list[LLOutput]:
        """Summed log p(continuation | context) over the real vocabulary, and whether greedy decoding
        would produce the continuation."""
        ...


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text up to the earliest stop string (exclusive)."""
    cut = len(text)
    for s in stop:
        index = text.find(s)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]
