"""`--backend fake`: a deterministic stand-in that loads no model, for tests of the runner, tasks and reports.

It uses the checkpoint's real tokenizer and fingerprint, so records, resume keys and prompts are those of a
real run; its outputs are a pure function of the request ids (a seeded hash), so reruns are identical."""

from __future__ import annotations

import hashlib
import random

from meap_bench.backends.base import REAL_VOCAB, GenOutput, GenRequest, LLOutput, LLRequest, cut_at_stop
from meap_bench.backends.common import fingerprint_dir, load_checkpoint_tokenizer, local_snapshot
from meap_bench.config import Checkpoint
from meap_bench.tokenization import excluded_token_ids

DEFAULT_MAX_LENGTH = 2048


def seeded(ids: list[int], salt: str) -> random.Random:
    return random.Random(hashlib.sha256(f"{salt}:{ids}".encode()).digest())


class FakeBackend:
    capabilities = frozenset({REAL_VOCAB})

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.name = checkpoint.name
        self.tokenizer = load_checkpoint_tokenizer(checkpoint)
        self.max_length = checkpoint.max_length or DEFAULT_MAX_LENGTH
        self.fingerprint = fingerprint_dir(local_snapshot(checkpoint.path))
        excluded = set(excluded_token_ids(self.tokenizer, len(self.tokenizer)))
        self.vocabulary = [i for i in range(len(self.tokenizer)) if i not in excluded]
        self.calls: list[tuple[str, int]] = []  # (method, requests): what the runner asked for

    def generate(self, requests: list[GenRequest]) -> list[GenOutput]:
        """Half the time a token span copied from the prompt (so needle-like tasks score some hits),
        else random real tokens; cut at the request's stop strings."""
        self.calls.append(("generate", len(requests)))
        outputs = []
        for request in requests:
            rng = seeded(request.prompt_ids, self.name)
            n = request.max_new_tokens
            if rng.random() < 0.5 and len(request.prompt_ids) > n:
                start = rng.randrange(len(request.prompt_ids) - n)
                ids = request.prompt_ids[start:start + n]
            else:
                ids = [rng.choice(self.vocabulary) for _ in range(n)]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            outputs.append(GenOutput(text=cut_at_stop(text, request.stop), token_ids=ids))
        return outputs

    def loglikelihood(self, requests: list[LLRequest]) -> list[LLOutput]:
        """A negative score per continuation token, drawn from (context, continuation)."""
        self.calls.append(("loglikelihood", len(requests)))
        outputs = []
        for request in requests:
            if not request.continuation_ids:
                raise ValueError("loglikelihood needs a non-empty continuation")
            rng = seeded(request.context_ids + [-1] + request.continuation_ids, self.name)
            logprob = -sum(rng.uniform(0.05, 8.0) for _ in request.continuation_ids)
            outputs.append(LLOutput(logprob=logprob, is_greedy=logprob > -0.3 * len(request.continuation_ids)))
        return outputs
