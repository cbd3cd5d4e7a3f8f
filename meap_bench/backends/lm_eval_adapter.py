"""lm-eval model `meap-bench`: lm-eval drives an already loaded meap-bench backend (no second load).

Tokenisation follows lm-eval's own `hf` model exactly (same `tok_encode`, same context/continuation
split, same left truncation), so request token ids - and hence loglikelihoods - match it; scoring goes
through `Backend.loglikelihood`, which normalises over the tokenizer's real vocabulary only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    _add_special_kwargs,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
)

from meap_bench.backends.base import Backend, GenRequest, LLRequest
from meap_bench.errors import UserError

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

MODEL_NAME = "meap-bench"
DEFAULT_MAX_GEN_TOKS = 256


@register_model(MODEL_NAME)
class MeapBenchLM(TemplateLM):
    """An lm-eval `LM` over a meap-bench `Backend`; batching and sorting happen inside the backend."""

    def __init__(self, backend: Backend, add_bos_token: bool | None = None,
                 max_gen_toks: int = DEFAULT_MAX_GEN_TOKS) -> None:
        super().__init__()
        self.engine = backend  # TemplateLM's own `backend` attribute names the model type ("causal")
        self.tokenizer = backend.tokenizer
        self.add_bos_token = add_bos_token
        self._max_gen_toks = max_gen_toks
        self._context_cache: dict[str, list[int]] = {}
        self._prefix_text = self.tokenizer.decode(self.prefix_token_id)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None
                            ) -> MeapBenchLM:
        """`lm_eval --model meap-bench --model_args pretrained=PATH[,batch_size=N,dtype=...]`: loads an
        HF backend for PATH (inside meap-bench runs the loaded backend is passed instead)."""
        from meap_bench.backends.hf import HFBackend
        from meap_bench.config import Checkpoint

        args = dict(arg_dict)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if "pretrained" not in args:
            raise UserError(f"--model {MODEL_NAME}: give --model_args pretrained=PATH")
        path = str(args.pop("pretrained"))
        batch_size = args.pop("batch_size", extra.get("batch_size", 8))
        device = str(args.pop("device", extra.get("device") or "auto"))
        checkpoint = Checkpoint(name=args.pop("name", path), path=path, dtype=args.pop("dtype", "auto"),
                                batch_size=int(batch_size), max_length=args.pop("max_length", None))
        return cls(HFBackend(checkpoint, device=device), **args)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None
                               ) -> MeapBenchLM:
        return cls.create_from_arg_obj(lm_utils.simple_parse_args_string(arg_string), additional_config)

    # -- tokenisation (identical to lm-eval's HFLM) --------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self.engine.max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.name_or_path).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        special = _add_special_kwargs(add_special_tokens, self.add_bos_token)
        if add_special_tokens is None and has_bos_prefix(string, self._prefix_text):
            special["add_special_tokens"] = False
        encoding = self.tokenizer.encode(string, **special)
        return encoding[-left_truncate_len:] if left_truncate_len else encoding

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's split (trailing context spaces move to the continuation; encode the whole, keep the
        tail), with each context encoded once for all its choices."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok_encode(context + continuation)
        if context not in self._context_cache:
            self._context_cache[context] = self.tok_encode(context)
        context_enc = self._context_cache[context]
        return context_enc, whole[len(context_enc):]

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        try:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        finally:
            self._context_cache.clear()

    # -- scoring -------------------------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str] | None, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """One backend call for all requests; like lm-eval's hf model, an over-long context is cut from
        the left so that context + continuation fits max_length + 1 tokens."""
        backend_requests = []
        for _, context, continuation in requests:
            if not context or not continuation:
                raise ValueError("lm-eval loglikelihood requests need a non-empty context and continuation")
            if len(continuation) > self.max_length:
                raise UserError(f"an lm-eval continuation of {len(continuation)} tokens exceeds the checkpoint's "
                                f"max length {self.max_length}")
            keep = self.max_length + 1 - len(continuation)
            backend_requests.append(LLRequest(context[-keep:], continuation))
        outputs = self.engine.loglikelihood(backend_requests)
        answers = []
        for (strings, _, _), output in zip(requests, outputs, strict=True):
            answer = (output.logprob, output.is_greedy)
            if strings is not None:
                self.cache_hook.add_partial("loglikelihood", strings, answer)
            answers.append(answer)
        return answers

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Disjoint max_length windows (lm-eval's own split), scored in one backend call."""
        windows: list[tuple[None, list[int], list[int]]] = []
        counts = []
        for (string,) in (r.args for r in requests):
            rolling = lm_utils.get_rolling_token_windows(token_list=self.tok_encode(string),
                                                         prefix_token=self.prefix_token_id,
                                                         max_seq_len=self.max_length, context_len=1)
            parts = [(None, *lm_utils.make_disjoint_window(w)) for w in rolling]
            windows.extend(parts)  # type: ignore[arg-type]
            counts.append(len(parts))
        scores = iter(self._loglikelihood_tokens(windows))  # type: ignore[arg-type]
        totals = []
        for request, count in zip(requests, counts, strict=True):
            total = sum(next(scores)[0] for _ in range(count))
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
            totals.append(total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy generation (the backend decodes greedily over the real vocabulary); sampling settings
        are refused rather than silently ignored."""
        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        backend_requests, stops = [], []
        for context, gen_kwargs in (r.args for r in requests):
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            if kwargs.get("do_sample"):
                raise UserError(f"lm-eval model {MODEL_NAME} decodes greedily; the task asks for sampling "
                                f"({dict(gen_kwargs)}); set do_sample: false in its generation_kwargs")
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = int(kwargs.pop("max_gen_toks"))
            if max_new >= self.max_length:
                raise UserError(f"max_gen_toks {max_new} must be below the checkpoint's max length {self.max_length}")
            ids = self.tok_encode(context, left_truncate_len=self.max_length - max_new)
            backend_requests.append(GenRequest(ids, max_new, tuple(s for s in until if s and s != eos)))
            stops.append(until)
        outputs = self.engine.generate(backend_requests)
        texts = []
        for request, output, until in zip(requests, outputs, stops, strict=True):
            text = postprocess_generated_text(output.text, until, None)
            self.cache_hook.add_partial("generate_until", request.args, text)
            texts.append(text)
        return texts

    def get_model_info(self) -> dict[str, Any]:
        return {"model_name": self.engine.name, "model_fingerprint": self.engine.fingerprint,
                "model_max_length": self.max_length}
