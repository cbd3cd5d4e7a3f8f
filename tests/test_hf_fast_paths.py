"""Equal-length batching and prefix reuse in the HF backend give exactly the outputs of the plain path
(mixed-length, padded batches, every prompt prefilled whole) on a needle-like depth sweep."""

from __future__ import annotations

import pytest

from meap_bench.backends.base import GenRequest, LLRequest
from meap_bench.backends.hf import MIN_PREFIX, HFBackend, shared_prefix
from meap_bench.config import Checkpoint

HAYSTACK = "Rivers run to the sea, yet the sea is not full. Every morning the baker opens the shop at six. " * 6
NEEDLE = " The special magic number for apple is 1234567."


def sweep(tokenizer) -> list[GenRequest]:
    """A depth sweep at one length (the haystack shared up to each insertion point), plus other lengths."""
    base = tokenizer(HAYSTACK)["input_ids"]
    needle = tokenizer(NEEDLE)["input_ids"]
    question = tokenizer(" What is the special magic number for apple?")["input_ids"]
    requests = [GenRequest(base[:d] + needle + base[d:] + question, 10, ("\n", "."))
                for d in range(0, len(base) + 1, len(base) // 6)]
    return requests + [GenRequest(base[:40] + question, 6), GenRequest(base[:41], 12)]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_equal_length_batches_and_prefix_reuse_match_the_plain_path(tiny_pair, batch_size, monkeypatch):
    checkpoint = Checkpoint(name="t", path=str(tiny_pair["meap"]), objective="meap", batch_size=batch_size)
    plain = HFBackend(checkpoint, "cpu", equal_length=False, prefix_reuse=False)
    fast = HFBackend(checkpoint, "cpu", equal_length=True, prefix_reuse=True)
    requests = sweep(plain.tokenizer)
    reused: list[bool] = []
    original = fast.prefix_cache

    def watched(batch: list[GenRequest]) -> dict:
        found = original(batch)
        reused.append(bool(found))
        return found

    monkeypatch.setattr(fast, "prefix_cache", watched)
    assert fast.generate(requests) == plain.generate(requests)
    assert (batch_size > 1) == any(reused)  # the shared prefix really was prefilled once for a batch
    ll = [LLRequest(r.prompt_ids[:-3], r.prompt_ids[-3:]) for r in requests]
    ours, theirs = fast.loglikelihood(ll), plain.loglikelihood(ll)
    assert [o.is_greedy for o in ours] == [o.is_greedy for o in theirs]
    assert all(abs(a.logprob - b.logprob) < 1e-4 for a, b in zip(ours, theirs, strict=True))


def test_batches_group_prompts_that_share_a_prefix(tiny_pair):
    checkpoint = Checkpoint(name="t", path=str(tiny_pair["meap"]), objective="meap", batch_size=8)
    fast = HFBackend(checkpoint, "cpu", equal_length=True, prefix_reuse=True)
    requests = sweep(fast.tokenizer)
    batches: list[list[GenRequest]] = []
    fast.batched(requests, lambda r: len(r.prompt_ids), lambda b: batches.append(b) or [None] * len(b),
                 key=lambda r: r.prompt_ids)
    for batch in batches:
        assert len({len(r.prompt_ids) for r in batch}) == 1  # never padded
        if len(batch) > 1 and shared_prefix([batch[0].prompt_ids, batch[1].prompt_ids]) >= MIN_PREFIX:
            assert shared_prefix([r.prompt_ids for r in batch]) >= MIN_PREFIX
    assert sorted(id(r) for b in batches for r in b) == sorted(id(r) for r in requests)
