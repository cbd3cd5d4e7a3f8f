"""Attention summaries for the HF backend without materialising attention maps.

A transformers attention implementation (`meap_bench_probe`, registered with `AttentionInterface`) wraps
SDPA: each layer's call first reduces the attention rows of the requested query positions to span masses
and entropies, then runs ordinary SDPA. It sees the query and key states exactly as the model's own
attention does (after RoPE, q/k norms and the grouped-query layout), so it works for any model whose
attention goes through `AttentionInterface` (Llama, Mistral, Qwen, ...), in any dtype. Extra memory per
layer is one float32 copy of the keys and the [heads, queries, keys] probabilities of one row at a time;
nothing is kept between layers but the reduced numbers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from meap_bench.backends.base import AttnOutput, AttnRequest
from meap_bench.errors import UserError

PROBE = "meap_bench_probe"
UNSUPPORTED = ("softcap", "sliding_window", "position_bias", "s_aux")  # attention that is not a plain softmax


def summarise(query: torch.Tensor, key: torch.Tensor, scaling: float, request: AttnRequest) -> torch.Tensor:
    """[queries, heads, spans + 1] for one batch row (`query` [heads, T, D], `key` [kv heads, T, D]):
    causal softmax of the query positions' rows, summed over each span, then the entropy (nats)."""
    heads, kv_heads = query.shape[0], key.shape[0]
    groups = heads // kv_heads
    positions = torch.tensor(request.queries, device=query.device)
    visible = int(positions.max()) + 1
    # query head h reads key head h // groups (transformers' repeat_kv layout)
    q = query[:, positions].float().reshape(kv_heads, groups * len(positions), -1)
    logits = torch.matmul(q, key[:, :visible].float().transpose(1, 2)) * scaling
    logits = logits.reshape(heads, len(positions), visible)
    future = torch.arange(visible, device=query.device)[None, :] > positions[:, None]
    probs = logits.masked_fill(future, float("-inf")).softmax(dim=-1)
    del logits
    columns = [probs[..., start:min(end, visible)].sum(-1) for start, end in request.spans.values()]
    columns.append(-torch.special.xlogy(probs, probs).sum(-1))
    return torch.stack(columns, dim=-1).transpose(0, 1)


class Probe:
    """Summaries of one forward pass: per batch row, one [queries, heads, spans + 1] tensor per layer in
    call order (one attention call per layer and forward)."""

    def __init__(self, requests: list[AttnRequest]) -> None:
        self.requests = requests
        self.layers: list[list[torch.Tensor]] = [[] for _ in requests]

    def observe(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, scaling: float,
                kwargs: dict) -> None:
        used = [name for name in UNSUPPORTED if kwargs.get(name) is not None or getattr(module, name, None)]
        if used or getattr(module, "sinks", None) is not None:
            raise UserError(f"attention summaries support plain causal softmax attention; this model's attention "
                            f"uses {', '.join(used) or 'sinks'}; run the attention task on another checkpoint")
        for row, request in enumerate(self.requests):
            self.layers[row].append(summarise(query[row], key[row], scaling, request).cpu())

    def outputs(self) -> list[AttnOutput]:
        if not self.layers[0]:
            raise UserError("this model's attention does not go through transformers' AttentionInterface, so "
                            "no attention summaries can be taken; run the attention task on another checkpoint")
        results = []
        for request, layers in zip(self.requests, self.layers, strict=True):
            stacked = torch.stack(layers, dim=1).double().numpy()  # [queries, layers, heads, spans + 1]
            mass = {name: np.ascontiguousarray(stacked[..., i]) for i, name in enumerate(request.spans)}
            results.append(AttnOutput(mass=mass, entropy=np.ascontiguousarray(stacked[..., -1])))
        return results


ACTIVE: ContextVar[Probe | None] = ContextVar("meap_bench_attention_probe", default=None)


def probe_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                    **kwargs) -> tuple[torch.Tensor, None]:
    """SDPA, with the active probe's summaries taken first."""
    probe = ACTIVE.get()
    if probe is not None:
        probe.observe(module, query, key, scaling if scaling is not None else query.shape[-1] ** -0.5, kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                  **kwargs)


AttentionInterface.register(PROBE, probe_attention)
AttentionMaskInterface.register(PROBE, sdpa_mask)


@contextmanager
def probing(model: PreTrainedModel, requests: list[AttnRequest]) -> Iterator[Probe]:
    """The model runs the probe implementation inside the block, its own implementation again after."""
    previous = model.config._attn_implementation
    probe = Probe(requests)
    token = ACTIVE.set(probe)
    model.set_attn_implementation(PROBE)
    try:
        yield probe
    finally:
        model.set_attn_implementation(previous)
        ACTIVE.reset(token)
