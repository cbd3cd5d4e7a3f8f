"""A stand-in for the `vllm` package that implements only its documented offline surface, over a real
transformers model on CPU: `LLM(**engine args).generate(prompts, sampling_params, use_tqdm)`,
`inputs.TokensPrompt`, `SamplingParams`, `outputs.RequestOutput` / `CompletionOutput`, `logprobs.Logprob`.

Semantics follow vLLM's docs: outputs in prompt order; greedy at temperature 0; `allowed_token_ids`
restricts sampling only (prompt logprobs stay normalised over the full vocabulary); `prompt_logprobs=k`
gives, per prompt position after the first, the top-k tokens plus the prompt's own token, each a
`Logprob(logprob, rank, decoded_token)` with rank 1-based over the full vocabulary (the first entry is None);
stop strings end generation and are left out of the text; EOS ends it unless `ignore_eos`, and is kept in
`token_ids`; a prompt longer than `max_model_len` or more logprobs than `max_logprobs` is a ValueError."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any, TypedDict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ENGINE_ARGUMENTS = {"model", "tokenizer", "dtype", "seed", "enable_prefix_caching", "tensor_parallel_size",
                    "gpu_memory_utilization", "max_model_len", "max_logprobs", "data_parallel_size"}


class TokensPrompt(TypedDict, total=False):
    prompt_token_ids: list[int]


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    allowed_token_ids: list[int] | None = None


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int | None = None


class LLM:
    """Records its engine arguments (`options`) and every `generate` call (`calls`), so tests see what was
    asked; `LLM.instances` lists every engine started, newest last."""

    instances: list[LLM] = []  # noqa: RUF012

    def __init__(self, model: str, **kwargs: Any) -> None:
        unknown = set(kwargs) - ENGINE_ARGUMENTS
        if unknown:
            raise TypeError(f"unexpected engine arguments: {sorted(unknown)}")
        self.model, self.options = model, kwargs
        self.calls: list[tuple[list[TokensPrompt], Any]] = []
        self.tokenizer = kwargs.get("tokenizer") or model
        self.hf_tokenizer = AutoTokenizer.from_pretrained(self.tokenizer)
        self.hf_model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.max_model_len = kwargs.get("max_model_len") or self.hf_model.config.max_position_embeddings
        self.max_logprobs = kwargs.get("max_logprobs", 20)
        LLM.instances.append(self)

    def generate(self, prompts: list[TokensPrompt], sampling_params: SamplingParams | list[SamplingParams],
                 use_tqdm: bool = True) -> list[RequestOutput]:
        self.calls.append((prompts, sampling_params))
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        return [self.run(str(i), prompt, p) for i, (prompt, p) in enumerate(zip(prompts, params, strict=True))]

    @torch.no_grad()
    def run(self, request_id: str, prompt: TokensPrompt, params: SamplingParams) -> RequestOutput:
        ids = list(prompt["prompt_token_ids"])
        if len(ids) > self.max_model_len:
            raise ValueError(f"The prompt (length {len(ids)}) is longer than the maximum model length")
        for wanted in (params.logprobs, params.prompt_logprobs):
            if wanted is not None and wanted > self.max_logprobs:
                raise ValueError(f"Requested {wanted} logprobs, more than max_logprobs={self.max_logprobs}")
        if params.temperature != 0.0:
            raise NotImplementedError("the fake engine samples greedily only")
        prompt_logprobs = self.prompt_logprobs(ids, params.prompt_logprobs)
        return RequestOutput(request_id, None, ids, prompt_logprobs, [self.complete(ids, params)], True)

    def prompt_logprobs(self, ids: list[int], k: int | None) -> list[dict[int, Logprob] | None] | None:
        if k is None:
            return None
        scores = torch.log_softmax(self.hf_model(torch.tensor([ids])).logits[0].float(), dim=-1)
        result: list[dict[int, Logprob] | None] = [None]
        for position in range(1, len(ids)):
            row = scores[position - 1]
            chosen = [*row.topk(k).indices.tolist(), ids[position]] if k > 0 else [ids[position]]
            result.append({t: self.logprob(row, t) for t in chosen})
        return result

    def logprob(self, row: torch.Tensor, token: int) -> Logprob:
        return Logprob(row[token].item(), int((row > row[token]).sum().item()) + 1,
                       self.hf_tokenizer.decode([token]))

    def complete(self, ids: list[int], params: SamplingParams) -> CompletionOutput:
        new: list[int] = []
        stops = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
        eos = self.hf_tokenizer.eos_token_id
        finish, reason, text = "length", None, ""
        while len(new) < (params.max_tokens or 16) and len(ids) + len(new) < self.max_model_len:
            logits = self.hf_model(torch.tensor([ids + new])).logits[0, -1].float()
            if params.allowed_token_ids is not None:
                allowed = torch.full_like(logits, float("-inf"))
                allowed[params.allowed_token_ids] = 0.0
                logits = logits + allowed
            token = int(logits.argmax().item())
            new.append(token)
            text = self.hf_tokenizer.decode(new, skip_special_tokens=params.skip_special_tokens)
            if token == eos and not params.ignore_eos:
                finish = "stop"
                break
            hit = min(((text.find(s), s) for s in stops if s in text), default=None)
            if hit is not None:
                index, stop = hit
                text = text[:index + len(stop)] if params.include_stop_str_in_output else text[:index]
                finish, reason = "stop", stop
                break
        return CompletionOutput(0, text if params.detokenize else "", new, None, None, finish, reason)


def install(monkeypatch) -> types.ModuleType:
    """Make `import vllm` (and its documented submodules) resolve to this fake for one test."""
    LLM.instances = []
    root = types.ModuleType("vllm")
    modules = {"vllm": root}
    for sub, names in {"inputs": ["TokensPrompt"], "outputs": ["RequestOutput", "CompletionOutput"],
                       "sampling_params": ["SamplingParams"], "logprobs": ["Logprob"]}.items():
        module = types.ModuleType(f"vllm.{sub}")
        for name in names:
            setattr(module, name, globals()[name])
        setattr(root, sub, module)
        modules[f"vllm.{sub}"] = module
    for name in ("LLM", "SamplingParams", "TokensPrompt", "RequestOutput", "CompletionOutput"):
        setattr(root, name, globals()[name])
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return root


__all__ = ["LLM", "SamplingParams", "TokensPrompt", "RequestOutput", "CompletionOutput", "Logprob", "install"]
