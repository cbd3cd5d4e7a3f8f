"""Inference backends: one loaded model per checkpoint, shared by all tasks."""

from __future__ import annotations

from meap_bench.backends.base import Backend, GenOutput, GenRequest, LLOutput, LLRequest
from meap_bench.config import Checkpoint
from meap_bench.errors import UserError

BACKENDS = ("hf",)


def load_backend(checkpoint: Checkpoint, backend: str = "hf", device: str = "auto") -> Backend:
    if backend == "hf":
        from meap_bench.backends.hf import HFBackend

        return HFBackend(checkpoint, device=device)
    raise UserError(f"--backend '{backend}' is unknown; choose one of: {', '.join(BACKENDS)}")


__all__ = ["Backend", "GenOutput", "GenRequest", "LLOutput", "LLRequest", "load_backend", "BACKENDS"]
