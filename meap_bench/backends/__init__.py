"""Inference backends: one loaded model per checkpoint, shared by all tasks. Each backend is registered by
name with the capabilities it declares, so that a run knows (and records) them before loading anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from meap_bench.backends.base import (
    ATTENTION,
    PREFIX_REUSE,
    REAL_VOCAB,
    Backend,
    GenOutput,
    GenRequest,
    LLOutput,
    LLRequest,
)
from meap_bench.config import Checkpoint
from meap_bench.errors import UserError


@dataclass(frozen=True)
class BackendSpec:
    name: str
    capabilities: frozenset[str]
    load: Callable[[Checkpoint, str], Backend]  # (checkpoint, device) -> backend; imports its engine lazily
    about: str


def _hf(checkpoint: Checkpoint, device: str) -> Backend:
    from meap_bench.backends.hf import HFBackend

    return HFBackend(checkpoint, device=device)


def _vllm(checkpoint: Checkpoint, device: str) -> Backend:
    from meap_bench.backends.vllm import VLLMBackend

    return VLLMBackend(checkpoint, device=device)


def _fake(checkpoint: Checkpoint, device: str) -> Backend:
    from meap_bench.backends.fake import FakeBackend

    return FakeBackend(checkpoint)


REGISTRY: dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec("hf", frozenset({ATTENTION, REAL_VOCAB, PREFIX_REUSE}), _hf, "Hugging Face transformers, CPU or GPU"),
    BackendSpec("vllm", frozenset({PREFIX_REUSE}), _vllm,
                "vLLM offline engine, GPU (extra meap-bench[vllm]); logprobs over the full vocabulary"),
    BackendSpec("fake", frozenset({REAL_VOCAB}), _fake, "deterministic stand-in without a model, for tests"),
)}
BACKENDS = tuple(REGISTRY)


def backend_spec(name: str) -> BackendSpec:
    if name not in REGISTRY:
        raise UserError(f"--backend '{name}' is unknown; choose one of: {', '.join(BACKENDS)}")
    return REGISTRY[name]


def load_backend(checkpoint: Checkpoint, backend: str = "hf", device: str = "auto") -> Backend:
    return backend_spec(backend).load(checkpoint, device)


__all__ = ["Backend", "BackendSpec", "GenOutput", "GenRequest", "LLOutput", "LLRequest", "load_backend",
           "backend_spec", "BACKENDS", "REGISTRY"]
