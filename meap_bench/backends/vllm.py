"""`--backend vllm`: the same protocol through vLLM's offline `LLM` API (extra `meap-bench[vllm]`, GPU).

Only vLLM's documented surface is used: `TokensPrompt` (the task's own token ids, never re-tokenised),
greedy `SamplingParams` with `stop`, `max_tokens` and `allowed_token_ids` (so `[MASK]` and padding rows are
never generated), `prompt_logprobs` for loglikelihoods (as lm-eval's vllm model does), automatic prefix
caching on. vLLM normalises prompt logprobs over every row of the output embedding, not the real vocabulary:
this backend does not declare `REAL_VOCAB`, and the run records that. The greedy check is over the real
vocabulary: excluded ids ranked above a continuation token do not count against it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from meap_bench.backends.base import PREFIX_REUSE, GenOutput, GenRequest, LLOutput, LLRequest, cut_at_stop
from meap_bench.backends.common import (
    fingerprint_dir,
    load_checkpoint_tokenizer,
    load_model_config,
    local_snapshot,
)
from meap_bench.config import Checkpoint, VLLMSettings
from meap_bench.errors import UserError
from meap_bench.tokenization import excluded_token_ids

MIN_MAX_LOGPROBS = 20  # vLLM's default `max_logprobs`


class VLLMBackend:
    capabilities = frozenset({PREFIX_REUSE})

    def __init__(self, checkpoint: Checkpoint, device: str = "auto") -> None:
        if device == "cpu":
            raise UserError("--backend vllm runs on GPUs; use --device auto or cuda, or --backend hf on CPU")
        self.name = checkpoint.name
        self.checkpoint = checkpoint
        self.settings = checkpoint.vllm or VLLMSettings()
        self.tokenizer = load_checkpoint_tokenizer(checkpoint)
        config = load_model_config(checkpoint)
        self.max_length = (self.settings.max_model_len or checkpoint.max_length
                           or int(config.max_position_embeddings))
        self.fingerprint = fingerprint_dir(local_snapshot(checkpoint.path))
        self.excluded_ids = excluded_token_ids(self.tokenizer, int(config.vocab_size))
        excluded = set(self.excluded_ids)
        self.allowed_ids = [i for i in range(len(self.tokenizer)) if i not in excluded]
        # enough prompt logprobs that every excluded id ranked above a continuation token is seen
        self.prompt_logprobs = 1 + len(self.excluded_ids)
        self._engine: Any = None

    def engine_arguments(self) -> dict[str, Any]:
        """The `LLM(...)` arguments: checkpoint, dtype, parallelism, memory, context and prefix caching."""
        s = self.settings
        arguments = {
            "model": self.checkpoint.path, "tokenizer": self.checkpoint.tokenizer or self.checkpoint.path,
            "dtype": self.checkpoint.dtype, "seed": 0, "enable_prefix_caching": True,
            "tensor_parallel_size": s.tensor_parallel_size, "gpu_memory_utilization": s.gpu_memory_utilization,
            "max_model_len": self.max_length, "max_logprobs": max(MIN_MAX_LOGPROBS, self.prompt_logprobs),
        }
        if s.data_parallel_size > 1:
            arguments["data_parallel_size"] = s.data_parallel_size
        return arguments

    @property
    def engine(self) -> Any:
        """The vLLM engine, started on first use (a resumed run with nothing left to do never starts it)."""
        if self._engine is None:
            vllm = import_vllm()
            self._engine = vllm.LLM(**self.engine_arguments())
        return self._engine

    def check_length(self, ids: list[int], new_tokens: int) -> None:
        if not ids:
            raise ValueError("vllm backend: an empty prompt cannot be scored; give at least one context token")
        if len(ids) + new_tokens > self.max_length:
            raise ValueError(f"vllm backend: {len(ids)} prompt + {new_tokens} new tokens exceed max_model_len "
                             f"{self.max_length}; tasks must fit their prompts to the backend's max_length")

    def generate(self, requests: list[GenRequest]) -> list[GenOutput]:
        """Greedy generation over the real vocabulary, each request cut at its stop strings, max_new_tokens
        or EOS (EOS itself is not kept, as in the HF backend)."""
        if not requests:
            return []
        vllm = import_vllm()
        prompts, params = [], []
        for request in requests:
            self.check_length(request.prompt_ids, request.max_new_tokens)
            prompts.append(vllm.TokensPrompt(prompt_token_ids=list(request.prompt_ids)))
            params.append(vllm.SamplingParams(
                n=1, temperature=0.0, max_tokens=request.max_new_tokens, stop=list(request.stop) or None,
                allowed_token_ids=self.allowed_ids, skip_special_tokens=True, include_stop_str_in_output=False))
        outputs = self.engine.generate(prompts, params, use_tqdm=False)
        return [self.gen_output(request, output) for request, output in zip(requests, outputs, strict=True)]

    def gen_output(self, request: GenRequest, output: Any) -> GenOutput:
        completion = output.outputs[0]
        ids = list(completion.token_ids)
        if ids and ids[-1] == self.tokenizer.eos_token_id and completion.finish_reason == "stop":
            ids = ids[:-1]
        return GenOutput(text=cut_at_stop(completion.text, request.stop), token_ids=ids)

    def loglikelihood(self, requests: list[LLRequest]) -> list[LLOutput]:
        """One prompt (context + continuation) per request with `prompt_logprobs`; requests sharing a
        context share its KV blocks through vLLM's prefix cache."""
        if not requests:
            return []
        vllm = import_vllm()
        prompts = []
        for request in requests:
            if not request.continuation_ids:
                raise ValueError("loglikelihood needs a non-empty continuation")
            self.check_length(request.context_ids, len(request.continuation_ids))
            prompts.append(vllm.TokensPrompt(prompt_token_ids=list(request.context_ids + request.continuation_ids)))
        params = vllm.SamplingParams(n=1, temperature=0.0, max_tokens=1, prompt_logprobs=self.prompt_logprobs,
                                     detokenize=False)
        outputs = self.engine.generate(prompts, params, use_tqdm=False)
        return [self.ll_output(request, output) for request, output in zip(requests, outputs, strict=True)]

    def ll_output(self, request: LLRequest, output: Any) -> LLOutput:
        """Sum the continuation tokens' prompt logprobs; a token is greedy when it is a real token and no
        other real token outranks it."""
        ids = request.context_ids + request.continuation_ids
        if list(output.prompt_token_ids) != ids or len(output.prompt_logprobs) != len(ids):
            raise RuntimeError(f"vllm returned logprobs for another prompt ({len(output.prompt_logprobs)} "
                               f"positions for {len(ids)} tokens)")
        excluded = set(self.excluded_ids)
        total, greedy = 0.0, True
        for position in range(len(request.context_ids), len(ids)):
            ranked = output.prompt_logprobs[position]
            token = ranked[ids[position]]
            total += token.logprob
            above_excluded = sum(1 for t, lp in ranked.items() if t in excluded and lp.rank < token.rank)
            greedy = greedy and ids[position] not in excluded and token.rank - above_excluded == 1
        return LLOutput(logprob=total, is_greedy=greedy)


def import_vllm() -> Any:
    """vllm's `LLM`, `SamplingParams` and `TokensPrompt`, imported only when this backend runs."""
    try:
        import vllm
        from vllm.inputs import TokensPrompt
    except ImportError:
        raise UserError("--backend vllm needs vLLM: pip install 'meap-bench[vllm]' on a machine with a "
                        "CUDA GPU") from None
    return SimpleNamespace(LLM=vllm.LLM, SamplingParams=vllm.SamplingParams, TokensPrompt=TokensPrompt)
