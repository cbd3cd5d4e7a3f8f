"""The backend protocol every task uses: token ids in, text or loglikelihoods out.

Tasks tokenise once with the checkpoint's tokenizer, so every backend sees identical ids. Batching,
sorting and out-of-memory back-off live inside a backend, never in tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from transformers import PreTrainedTokenizerBase

# Capabilities a backend may declare (`Backend.capabilities`); the run records them with every result.
ATTENTION = "attention"  # `Backend.attention` returns attention summaries
REAL_VOCAB = "real-vocab-logprobs"  # loglikelihoods normalised over the real vocabulary ([MASK], padding rows out)
PREFIX_REUSE = "prefix-reuse"  # can reuse a shared prefix's computation (outputs as if run alone; HF: on by default)


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


@dataclass(frozen=True)
class AttnRequest:
    """One forward pass over `input_ids` whose attention is summarised at the query positions `queries`
    over named key spans (half-open token ranges). Nothing of the prompt's meaning reaches the backend."""

    input_ids: list[int]
    queries: tuple[int, ...]
    spans: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class AttnOutput:
    """Attention summaries, each an array [query, layer, head] (query heads, after grouped-query
    sharing): `mass[name]` is the attention weight summed over the span's keys; `entropy` is the entropy
    (nats) of the attention distribution over every visible key."""

    mass: dict[str, np.ndarray]
    entropy: np.ndarray


class Backend(Protocol):
    """One loaded checkpoint, shared by every task of a run. `capabilities` names the optional methods
    it implements (`ATTENTION`: `attention`); tasks that need one declare it and the runner checks."""

    name: str
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    fingerprint: str
    capabilities: frozenset[str]

    def generate(self, requests: list[GenRequest]) -> list[GenOutput]:
        """Greedy continuation of each prompt, cut at the first stop string."""
        ...

    def loglikelihood(self, requests: list[LLRequest]) -> list[LLOutput]:
        """Summed log p(continuation | context), and whether greedy decoding would produce the continuation
        (over the real vocabulary). The log-probabilities are normalised over the real vocabulary where
        `REAL_VOCAB` is in `capabilities`, else over every row of the output embedding (vllm)."""
        ...

    def attention(self, requests: list[AttnRequest]) -> list[AttnOutput]:
        """Per-layer and per-head attention summaries (only where `ATTENTION` is in `capabilities`)."""
        ...


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text up to the earliest stop string (exclusive)."""
    cut = len(text)
    for s in stop:
        index = text.find(s)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]
