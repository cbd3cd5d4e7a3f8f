"""Hugging Face transformers backend (CPU or GPU): one model load serves every task of a run."""

from __future__ import annotations

import functools
import inspect
import pickle
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from safetensors import SafetensorError
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from meap_bench.backends.base import (
    ATTENTION,
    PREFIX_REUSE,
    REAL_VOCAB,
    AttnOutput,
    AttnRequest,
    GenOutput,
    GenRequest,
    LLOutput,
    LLRequest,
    cut_at_stop,
)
from meap_bench.backends.common import (
    check_weight_files,
    fingerprint_dir,
    load_checkpoint_tokenizer,
    load_model_config,
    local_snapshot,
    resolve_device,
)
from meap_bench.backends.hf_cache import KV, Entry, PrefixStore, build_cache, cache_tensors
from meap_bench.config import Checkpoint
from meap_bench.errors import UserError
from meap_bench.faults import fault_point
from meap_bench.tokenization import excluded_token_ids

R = TypeVar("R")
Out = TypeVar("Out")
MIN_PREFIX = 32  # shared prompt tokens worth a separate prefill
# Speed options unless the caller says otherwise (every one gives the plain path's outputs; tested). Measured
# with benchmarks/gpu_suite.py (docs/performance.md): equal-length batches with prefix reuse ran the needle grid
# 2.5x faster than the plain path on 2 CPU cores, and 1.4-2.2x the naive loop on H100s; the static cache was slower.
DEFAULT_OPTIONS = {"equal_length": True, "prefix_reuse": True, "static_cache": False}
STORE_SHARE = 0.25  # share of the GPU's memory that stored KV caches may hold (prefix_reuse)
CPU_STORE_BYTES = 1 << 30
# Attention kernels SDPA may choose: all but cuDNN's, whose CPU cost per call (about 1 ms in the H100 profile,
# docs/performance.md) outweighs the short kernels of decode steps and short prompts; without it the needle grid
# ran 1.37x faster on an H100. On CPU the choice is unchanged (cuDNN attention is CUDA-only).
ATTENTION_KERNELS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def inference(method: Callable[..., R]) -> Callable[..., R]:
    """Run a backend call in inference mode with SDPA limited to ATTENTION_KERNELS."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        with torch.inference_mode(), sdpa_kernel(ATTENTION_KERNELS):
            return method(*args, **kwargs)

    return call


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def returned_cache(out):
    """The KV cache a forward or generate() returned (`cache` in recent transformers 5, else `past_key_values`)."""
    return out.cache if getattr(out, "cache", None) is not None else getattr(out, "past_key_values", None)


class RowEnds(StoppingCriteria):
    """Where each row of a batch ends: after the token that completes one of its own stop strings, at its own
    max_new_tokens, or before EOS. `transformers` pads a row once it has ended and stops when all have."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, requests: list[GenRequest], width: int) -> None:
        self.tokenizer, self.requests, self.width = tokenizer, requests, width
        self.eos = tokenizer.eos_token_id
        self.ends: list[int | None] = [None] * len(requests)  # new tokens kept, once a row has ended

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.width:].tolist()
        for row, request in enumerate(self.requests):
            if self.ends[row] is not None:
                continue
            tokens = new[row]
            if tokens[-1] == self.eos:
                self.ends[row] = len(tokens) - 1
            elif len(tokens) >= request.max_new_tokens or (
                    request.stop and any(s in self.tokenizer.decode(tokens, skip_special_tokens=True)
                                         for s in request.stop)):
                self.ends[row] = len(tokens)
        return torch.tensor([end is not None for end in self.ends], device=input_ids.device)

    def kept(self, row: int, generated: int) -> int:
        """New tokens to keep of a row (all `generated` if generation ended for another reason)."""
        end = self.ends[row]
        return generated if end is None else end


class HFBackend:
    """Tokenizer, config and fingerprint are read at once; the weights load on first use, so a resumed
    run whose samples are all recorded never loads them."""

    capabilities = frozenset({ATTENTION, REAL_VOCAB, PREFIX_REUSE})  # what it can do; speed options change no output

    def __init__(self, checkpoint: Checkpoint, device: str = "auto", equal_length: bool | None = None,
                 prefix_reuse: bool | None = None, static_cache: bool | None = None) -> None:
        """Speed options, each giving the plain path's outputs (tested); None: as DEFAULT_OPTIONS says.
        `equal_length`: a batch holds prompts of one length only (no padding, so no padding mask
        and the fused SDPA/flash kernels apply). `prefix_reuse`: the KV caches of prompts and of shared
        prefixes are kept (up to a memory budget), so that a batch starts from the longest stored prefix of
        its prompts (a depth sweep shares the haystack up to the insertion point) and scoring a prompt's
        candidates reuses its prefill. `static_cache`: generate() decodes into a preallocated cache."""
        self.name = checkpoint.name
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        cuda = self.device.type == "cuda"
        chosen = {"equal_length": equal_length, "prefix_reuse": prefix_reuse, "static_cache": static_cache}
        for option, value in chosen.items():
            setattr(self, option, DEFAULT_OPTIONS[option] if value is None else value)
        budget = torch.cuda.get_device_properties(self.device).total_memory * STORE_SHARE if cuda else CPU_STORE_BYTES
        self.store = PrefixStore(int(budget))
        self.dtype = resolve_dtype(checkpoint.dtype, self.device)
        self.batch_size = checkpoint.batch_size
        self.tokenizer = load_checkpoint_tokenizer(checkpoint)
        config = load_model_config(checkpoint)
        self.max_length = checkpoint.max_length or int(config.max_position_embeddings)
        self.fingerprint = fingerprint_dir(local_snapshot(checkpoint.path))
        check_weight_files(local_snapshot(checkpoint.path), checkpoint.name)
        self.excluded_ids = excluded_token_ids(self.tokenizer, int(config.vocab_size))
        tok = self.tokenizer
        self.pad_id = next(i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None)
        self._model: PreTrainedModel | None = None

    def options(self) -> dict[str, bool]:
        return {"equal_length": self.equal_length, "prefix_reuse": self.prefix_reuse,
                "static_cache": self.static_cache}

    @property
    def model(self) -> PreTrainedModel:
        if self._model is None:
            fault_point("load")
            placement = {"device_map": self.checkpoint.device_map} if self.checkpoint.device_map else {}
            try:
                model = AutoModelForCausalLM.from_pretrained(self.checkpoint.path, dtype=self.dtype, **placement)
            except torch.cuda.OutOfMemoryError:
                raise
            except (OSError, ValueError, RuntimeError, SafetensorError, pickle.UnpicklingError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise UserError(f"checkpoint '{self.name}': cannot load weights from "
                                f"'{self.checkpoint.path}' ({first}); the files are damaged or incomplete: "
                                f"copy or download them again") from None
            if placement:  # accelerate placed the layers (across GPUs): inputs go where the embeddings are
                self.device = model.get_input_embeddings().weight.device
            else:
                model = model.to(self.device)
            self._model = model.eval()
            output = model.get_output_embeddings().weight
            rows = output.shape[0]
            self.excluded_ids = excluded_token_ids(self.tokenizer, rows)
            self.excluded = torch.zeros(rows, dtype=torch.bool, device=output.device)
            self.excluded[self.excluded_ids] = True
        return self._model

    def masked_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits in float32 with padding rows and [MASK] at -inf: they can never be produced or win."""
        return logits.float().masked_fill(self.excluded, float("-inf"))

    def batched(self, items: Sequence[R], length: Callable[[R], int], run: Callable[[list[R]], list[Out]],
                equal: bool | None = None) -> list[Out]:
        """Run `items` longest first in batches, halving the batch on CUDA out-of-memory; results come
        back in the original order. With `equal` (default: `equal_length`), a batch never mixes lengths."""
        equal = self.equal_length if equal is None else equal
        order = sorted(range(len(items)), key=lambda i: -length(items[i]))
        results: list[Out | None] = [None] * len(items)
        start = 0
        while start < len(order):
            chunk = order[start:start + self.batch_size]
            if equal:
                chunk = [i for i in chunk if length(items[i]) == length(items[chunk[0]])]
            try:
                outputs = run([items[i] for i in chunk])
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.store.clear()
                torch.cuda.empty_cache()
                self.batch_size //= 2
                continue
            for index, output in zip(chunk, outputs, strict=True):
                results[index] = output
            start += len(chunk)
        return results  # type: ignore[return-value]

    def pad(self, sequences: list[list[int]], left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask) of sequences padded to the longest: left for generation, else right."""
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            cols = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[row, cols] = torch.tensor(seq, dtype=torch.long)
            mask[row, cols] = 1
        return ids, mask

    @inference
    def generate(self, requests: list[GenRequest]) -> list[GenOutput]:
        """With prefix reuse, prompts are prefilled one by one (unpadded) and decoded in batches that may
        mix lengths (`prefilled`); else batches are prefilled and decoded together."""
        return self.batched(requests, lambda r: len(r.prompt_ids), self._generate_batch,
                            equal=self.equal_length and not self.prefix_reuse)

    def _generate_batch(self, requests: list[GenRequest]) -> list[GenOutput]:
        """Greedy generation of a batch in which every row ends at its own stop strings, max_new_tokens or
        EOS (each output equals running that request alone); the batch ends when every row has ended."""
        model = self.model  # loads the weights (and the excluded ids of its real embedding size)
        ids, mask = self.pad([r.prompt_ids for r in requests], left=True)
        ends = RowEnds(self.tokenizer, requests, ids.shape[1])
        prompts = [r.prompt_ids for r in requests]
        width = ids.shape[1]
        cache = self.prefilled(prompts, width) if self.prefix_reuse else {}
        keep = bool(cache)  # store the prompts' caches for later batches and for scoring
        static = {"cache_implementation": "static"} if self.static_cache and not cache else {}
        config = GenerationConfig(
            max_new_tokens=max(r.max_new_tokens for r in requests), do_sample=False, num_beams=1,
            eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.pad_id,
            suppress_tokens=self.excluded_ids or None, return_dict_in_generate=keep, output_logits=keep, **static,
        )
        out = model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             generation_config=config, stopping_criteria=StoppingCriteriaList([ends]), **cache)
        if keep:
            for row, prompt in enumerate(prompts):
                self.store.add(prompt, cache_tensors(returned_cache(out), row, width - len(prompt), width),
                               out.logits[0][row])
            out = out.sequences
        outputs = []
        for row, request in enumerate(requests):
            new = out[row, ids.shape[1]:ids.shape[1] + ends.kept(row, out.shape[1] - ids.shape[1])].tolist()
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            outputs.append(GenOutput(text=cut_at_stop(text, request.stop), token_ids=new))
        return outputs

    def prefilled(self, prompts: list[list[int]], width: int) -> dict:
        """`past_key_values` holding every prompt but its last token, right-aligned in the batch's left-padded
        width: each prompt is prefilled alone (unpadded, so no mask and the fused attention kernels apply),
        continuing the longest stored prefix of it (a depth sweep shares the haystack up to the insertion
        point, in this batch or an earlier one). generate() then runs the last tokens and decodes all rows
        together; nothing where a prompt has a single token or does not fit the store."""
        if min(len(p) for p in prompts) < 2:
            return {}
        made = []
        for prompt in sorted(prompts):  # neighbours in id order share the longest prefixes
            if self.store.longest(prompt[:-1])[0] < len(prompt) - 1:
                made.append(self.store.add(prompt[:-1], self.prefill(prompt[:-1])))
        found = [self.store.longest(p[:-1]) for p in prompts]
        usable = all(n == len(p) - 1 for (n, _), p in zip(found, prompts, strict=True))
        cache = build_cache(self.model.config, [e.kv for _, e in found], [len(p) - 1 for p in prompts],  # type: ignore
                            width - 1) if usable else None
        for entry in made:  # the whole prompts are stored after generate(); these would be duplicates
            if entry is not None:
                self.store.remove(entry)
        return {"cache" if self._forward_takes("cache") else "past_key_values": cache} if usable else {}

    def prefill(self, ids: list[int]) -> KV:
        """Keys and values of `ids`, continuing the longest stored prefix of them."""
        start, entry = self.store.longest(ids)
        start = min(start, len(ids) - 1)
        past = {}
        if entry is not None and start >= MIN_PREFIX:
            past = {"cache" if self._forward_takes("cache") else "past_key_values":
                    build_cache(self.model.config, [entry.kv], [start], start)}
        else:
            start = 0
        keep = {"logits_to_keep": 1} if self._forward_takes("logits_to_keep") else {}
        out = self.model(input_ids=torch.tensor([ids[start:]], device=self.device), use_cache=True, **past, **keep)
        return cache_tensors(returned_cache(out), 0, 0, len(ids))

    @inference
    def loglikelihood(self, requests: list[LLRequest]) -> list[LLOutput]:
        """Requests that share a context (the choices of a multiple-choice question) run as one group: one
        forward over the context, then one over all its continuations on the context's KV cache. Other
        requests run whole. Both paths are length-sorted and batched (`batch_size` contexts or sequences
        per forward)."""
        for request in requests:
            if not request.continuation_ids:
                raise ValueError("loglikelihood needs a non-empty continuation")
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(tuple(request.context_ids), []).append(index)
        results: list[LLOutput | None] = [None] * len(requests)
        packable = self.prefix_reuse and self.model.config._attn_implementation in ("sdpa", "eager")  # 4D masks
        for context in list(groups) if self.prefix_reuse else []:  # contexts prefilled before (a prompt just generated)
            entry = self.store.exact(context) if context else None
            if entry is not None and (packable or all(len(requests[i].continuation_ids) == 1 for i in groups[context])):
                members = groups.pop(context)
                for index, output in zip(members, self._stored_context([requests[i] for i in members], entry),
                                         strict=True):
                    results[index] = output
        shared = [members for context, members in groups.items() if context and len(members) > 1]
        alone = [i for context, members in groups.items() if not (context and len(members) > 1) for i in members]
        singles = self.batched([requests[i] for i in alone], lambda r: len(r.context_ids) + len(r.continuation_ids),
                               self._loglikelihood_batch)
        for index, output in zip(alone, singles, strict=True):
            results[index] = output
        grouped = self.batched([[requests[i] for i in members] for members in shared],
                               lambda g: len(g[0].context_ids) + max(len(r.continuation_ids) for r in g),
                               self._shared_context_batch)
        for members, outputs in zip(shared, grouped, strict=True):
            for index, output in zip(members, outputs, strict=True):
                results[index] = output
        return results  # type: ignore[return-value]

    def _loglikelihood_batch(self, requests: list[LLRequest]) -> list[LLOutput]:
        sequences = [(r.context_ids + r.continuation_ids)[:-1] for r in requests]
        ids, mask = self.pad(sequences)
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        rows = torch.cat([torch.full((len(r.continuation_ids),), row) for row, r in enumerate(requests)])
        positions = torch.cat([torch.arange(len(s) - len(r.continuation_ids), len(s))
                               for s, r in zip(sequences, requests, strict=True)])
        return self._score(logits[rows.to(self.device), positions.to(self.device)], requests)

    def _shared_context_batch(self, groups: list[list[LLRequest]]) -> list[list[LLOutput]]:
        """Groups of requests with one context each: the contexts run once (right-padded, KV cached); the
        first continuation token is scored at the context's last position, the rest by running every
        continuation but its last token on a copy of its context's cache."""
        model = self.model
        contexts = [group[0].context_ids for group in groups]
        ids, mask = self.pad(contexts)
        last = torch.tensor([len(c) - 1 for c in contexts])
        keep = torch.unique(last)  # only these positions need logits
        out = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=True,
                    **({"logits_to_keep": keep.to(self.device)} if self._forward_takes("logits_to_keep") else {}))
        column = torch.searchsorted(keep, last) if self._forward_takes("logits_to_keep") else last
        first_logits = out.logits[torch.arange(len(groups)).to(self.device), column.to(self.device)]  # [groups, vocab]
        flat = [(g, request) for g, group in enumerate(groups) for request in group]
        longer = [k for k, (_, request) in enumerate(flat) if len(request.continuation_ids) > 1]
        later = None
        cache = returned_cache(out)
        if longer and cache is None:  # a model that returns no KV cache: score these requests whole
            outputs = iter(self._loglikelihood_batch([request for _, request in flat]))
            return [[next(outputs) for _ in group] for group in groups]
        if longer:
            owner = torch.tensor([flat[k][0] for k in longer])
            cache.batch_select_indices(owner.to(self.device))
            tail_ids, tail_mask = self.pad([flat[k][1].continuation_ids[:-1] for k in longer])
            span = tail_ids.shape[1]
            positions = torch.tensor([len(contexts[flat[k][0]]) for k in longer])[:, None] + torch.arange(span)
            cache_arg = {"cache" if self._forward_takes("cache") else "past_key_values": cache}
            later = model(input_ids=tail_ids.to(self.device), **cache_arg,
                          attention_mask=torch.cat([mask[owner], tail_mask], dim=1).to(self.device),
                          position_ids=positions.to(self.device)).logits
        del out
        row_of = {k: row for row, k in enumerate(longer)}
        pieces = []
        for k, (g, request) in enumerate(flat):
            pieces.append(first_logits[g:g + 1])
            if k in row_of:
                pieces.append(later[row_of[k], :len(request.continuation_ids) - 1])  # type: ignore[index]
        outputs = iter(self._score(torch.cat(pieces), [request for _, request in flat]))
        return [[next(outputs) for _ in group] for group in groups]

    def _stored_context(self, group: list[LLRequest], entry: Entry) -> list[LLOutput]:
        """Requests on one context whose cache and last logits are stored: the first continuation token is
        scored from the stored logits; the other tokens of all continuations run in one forward on one copy
        of the context's cache (not one per continuation), packed into one row under a 4D mask in which each
        continuation sees the context and its own earlier tokens."""
        model, n = self.model, len(entry.ids)
        tails = [r.continuation_ids[:-1] for r in group]
        later: list[torch.Tensor] = [entry.logits[None][:0]] * len(group)
        if any(tails):
            key = "cache" if self._forward_takes("cache") else "past_key_values"
            ids = [t for tail in tails for t in tail]
            positions = torch.tensor([n + i for tail in tails for i in range(len(tail))])
            allowed = torch.zeros(len(ids), n + len(ids), dtype=torch.bool)
            allowed[:, :n] = True
            start = 0
            for tail in tails:
                allowed[start:start + len(tail), n + start:n + start + len(tail)] = torch.ones(
                    len(tail), len(tail), dtype=torch.bool).tril()
                start += len(tail)
            mask = allowed if model.config._attn_implementation == "sdpa" else torch.zeros(
                allowed.shape, dtype=self.dtype).masked_fill(~allowed, torch.finfo(self.dtype).min)
            logits = model(input_ids=torch.tensor([ids], device=self.device), position_ids=positions[None].to(
                self.device), attention_mask=mask[None, None].to(self.device),
                **{key: build_cache(model.config, [entry.kv], [n], n)}).logits[0]
            bounds = torch.tensor([0] + [len(t) for t in tails]).cumsum(0).tolist()
            later = [logits[a:b].float() for a, b in zip(bounds, bounds[1:], strict=False)]
        pieces = [piece for k in range(len(group)) for piece in (entry.logits[None], later[k])]
        return self._score(torch.cat(pieces), group)

    @inference
    def attention(self, requests: list[AttnRequest]) -> list[AttnOutput]:
        """One forward per batch (right-padded, so every row's keys and positions are what it gets alone),
        summarised layer by layer while it runs (`hf_attention`); only the last position's logits are
        computed."""
        return self.batched(requests, lambda r: len(r.input_ids), self._attention_batch)

    def _attention_batch(self, requests: list[AttnRequest]) -> list[AttnOutput]:
        from meap_bench.backends.hf_attention import probing

        model = self.model
        ids, mask = self.pad([r.input_ids for r in requests])
        keep = {"logits_to_keep": 1} if self._forward_takes("logits_to_keep") else {}
        with probing(model, requests) as probe:
            model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False, **keep)
        return probe.outputs()

    def _forward_takes(self, argument: str) -> bool:
        """Whether the model's forward has `argument` (`logits_to_keep`: logits only where needed; `cache`:
        the KV cache argument of transformers 5, `past_key_values` before)."""
        if not hasattr(self, "_forward_arguments"):
            self._forward_arguments = set(inspect.signature(self.model.forward).parameters)
        return argument in self._forward_arguments

    def _score(self, logits: torch.Tensor, requests: list[LLRequest]) -> list[LLOutput]:
        """`logits` holds, request after request, the row predicting each continuation token: summed
        log-probabilities over the real vocabulary, and whether every token is the argmax."""
        targets = torch.tensor([t for r in requests for t in r.continuation_ids], device=logits.device)
        owner = torch.cat([torch.full((len(r.continuation_ids),), i) for i, r in enumerate(requests)])
        owner = owner.to(logits.device)
        scores = torch.log_softmax(self.masked_logits(logits), dim=-1)
        token_logprobs = scores.gather(-1, targets[:, None]).squeeze(-1)
        misses = (scores.argmax(-1) != targets).float()
        sums = torch.zeros(len(requests), device=logits.device).index_add_(0, owner, token_logprobs)
        missed = torch.zeros(len(requests), device=logits.device).index_add_(0, owner, misses)
        return [LLOutput(logprob=lp, is_greedy=m == 0) for lp, m in zip(sums.tolist(), missed.tolist(), strict=True)]
