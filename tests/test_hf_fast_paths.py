"""The HF backend's speed options give exactly the outputs of the plain path (mixed-length, padded batches,
every prompt prefilled whole, every context scored from scratch) on a needle-like depth sweep: equal-length
batches, prefix reuse within and across batches (and for scoring a generated prompt's candidates), a static
decode cache, and accelerate placement (`device_map`)."""

from __future__ import annotations

import pytest
import torch

from meap_bench.backends.base import GenRequest, LLRequest
from meap_bench.backends.hf import HFBackend
from meap_bench.backends.hf_cache import PrefixStore
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


def candidates(requests: list[GenRequest]) -> list[LLRequest]:
    """Scoring after generation, as the runner does: each prompt with candidates of 1 to 4 tokens."""
    return [LLRequest(r.prompt_ids, r.prompt_ids[k:k + width]) for r in requests for k, width in
            ((5, 4), (9, 1), (20, 3))] + [LLRequest(requests[0].prompt_ids[:-3], requests[0].prompt_ids[-3:])]


def assert_same_scores(ours, theirs) -> None:
    assert [o.is_greedy for o in ours] == [o.is_greedy for o in theirs]
    assert all(abs(a.logprob - b.logprob) < 1e-4 for a, b in zip(ours, theirs, strict=True))


def checkpoint(tiny_pair, batch_size: int, **extra) -> Checkpoint:
    return Checkpoint(name="t", path=str(tiny_pair["meap"]), objective="meap", batch_size=batch_size,
                      dtype="float32", **extra)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_equal_length_batches_and_prefix_reuse_match_the_plain_path(tiny_pair, batch_size):
    plain = HFBackend(checkpoint(tiny_pair, batch_size), "cpu", equal_length=False, prefix_reuse=False)
    batched = HFBackend(checkpoint(tiny_pair, batch_size), "cpu", equal_length=True, prefix_reuse=False)
    fast = HFBackend(checkpoint(tiny_pair, batch_size), "cpu", equal_length=True, prefix_reuse=True)
    requests = sweep(plain.tokenizer)
    tokens = {}
    for name, backend in (("batched", batched), ("fast", fast)):
        seen = tokens.setdefault(name, [])
        backend.model.register_forward_pre_hook(lambda _, args, kwargs, s=seen: s.append(kwargs["input_ids"].numel()),
                                                with_kwargs=True)
        assert backend.generate(requests) == plain.generate(requests)
    # the same batches computed fewer tokens: stored prefixes were reused, across batches too (batch size 1)
    assert sum(tokens["fast"]) < sum(tokens["batched"]) - len(HAYSTACK) // 8
    assert all(fast.store.exact(r.prompt_ids) is not None for r in requests)  # kept for scoring
    scored = candidates(requests)
    assert_same_scores(fast.loglikelihood(scored), plain.loglikelihood(scored))


def test_scoring_a_stored_prompt_needs_no_second_prefill(tiny_pair):
    """Candidates of a just-generated prompt are scored on its stored cache: the model never sees the
    prompt again (every forward gets fewer tokens than the prompt), and the scores equal the plain path's."""
    plain = HFBackend(checkpoint(tiny_pair, 8), "cpu", equal_length=False, prefix_reuse=False)
    fast = HFBackend(checkpoint(tiny_pair, 8), "cpu", equal_length=True, prefix_reuse=True)
    requests = sweep(fast.tokenizer)[:4]
    fast.generate(requests)
    seen: list[int] = []
    hook = fast.model.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["input_ids"].shape[1]),
                                                with_kwargs=True)
    scored = candidates(requests)[:-1]
    try:
        ours = fast.loglikelihood(scored)
    finally:
        hook.remove()
    assert seen and max(seen) < min(len(r.prompt_ids) for r in requests)
    assert len(seen) == len(requests)  # one forward per prompt for all its candidates
    assert_same_scores(ours, plain.loglikelihood(scored))


def test_eager_attention_takes_the_packed_candidates_too(tiny_pair):
    """The packed candidates' 4D mask is additive (float) under eager attention, boolean under SDPA."""
    plain = HFBackend(checkpoint(tiny_pair, 4), "cpu", equal_length=False, prefix_reuse=False)
    fast = HFBackend(checkpoint(tiny_pair, 4), "cpu", equal_length=True, prefix_reuse=True)
    fast.model.set_attn_implementation("eager")
    assert fast.model.config._attn_implementation == "eager"
    requests = sweep(fast.tokenizer)[:3]
    assert fast.generate(requests) == plain.generate(requests)
    scored = candidates(requests)
    assert_same_scores(fast.loglikelihood(scored), plain.loglikelihood(scored))


def test_static_cache_and_device_map_match_the_plain_path(tiny_pair):
    plain = HFBackend(checkpoint(tiny_pair, 4), "cpu", equal_length=False, prefix_reuse=False)
    static = HFBackend(checkpoint(tiny_pair, 4), "cpu", equal_length=True, prefix_reuse=False, static_cache=True)
    placed = HFBackend(checkpoint(tiny_pair, 4, device_map="auto"), "cpu", prefix_reuse=True)
    requests = sweep(plain.tokenizer)
    reference = plain.generate(requests)
    assert static.generate(requests) == reference
    assert placed.generate(requests) == reference
    assert placed.device == placed.model.get_input_embeddings().weight.device  # inputs follow the placement
    scored = candidates(requests)
    assert_same_scores(placed.loglikelihood(scored), plain.loglikelihood(scored))


def test_default_options_are_the_measured_ones_and_each_can_be_switched_off(tiny_pair):
    default = HFBackend(checkpoint(tiny_pair, 4), "cpu")
    assert default.options() == {"equal_length": True, "prefix_reuse": True, "static_cache": False}
    assert default.generate(sweep(default.tokenizer)[:2]) and default.store.entries  # prompts' caches kept
    plain = HFBackend(checkpoint(tiny_pair, 4), "cpu", equal_length=False, prefix_reuse=False)
    assert not plain.store.entries and plain.generate(sweep(plain.tokenizer)[:2]) and not plain.store.entries


def test_backend_calls_run_without_cudnn_attention_and_restore_it(tiny_pair):
    """cuDNN's SDPA kernel is left out inside every backend call (docs/performance.md) and only there."""
    backend = HFBackend(checkpoint(tiny_pair, 4), "cpu")
    seen: list[bool] = []
    backend.model.register_forward_pre_hook(lambda *_: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
    requests = sweep(backend.tokenizer)[:2]
    backend.generate(requests)
    backend.loglikelihood(candidates(requests))
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_store_drops_the_oldest_beyond_its_budget():
    kv = [(torch.zeros(1, 2, 10, 4), torch.zeros(1, 2, 10, 4))]  # 640 bytes
    store = PrefixStore(budget=1500)
    for first in (1, 2, 3):
        store.add([first] + list(range(9)), kv, torch.zeros(5))
    assert [int(e.ids[0]) for e in store.entries.values()] == [2, 3] and store.nbytes == 1280
    assert store.longest([3, 0, 1, 2, 7])[0] == 4 and store.exact([1] + list(range(9))) is None
    assert store.exact([2] + list(range(9))) is not None


def test_prefix_reuse_decodes_prompts_of_several_lengths_together(tiny_pair):
    """Prompts are prefilled one by one (unpadded), then decoded in one batch whatever their lengths."""
    fast = HFBackend(checkpoint(tiny_pair, 8), "cpu", equal_length=True, prefix_reuse=True)
    requests = sweep(fast.tokenizer)
    shapes: list[tuple[int, int]] = []
    fast.model.register_forward_pre_hook(lambda _, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
                                         with_kwargs=True)
    fast.generate(requests)
    first_batch = sorted(requests, key=lambda r: -len(r.prompt_ids))[:8]
    assert len({len(r.prompt_ids) for r in first_batch}) > 1
    assert (8, 1) in shapes and all(rows == 1 for rows, width in shapes if width > 1)


def test_device_map_is_a_checkpoint_setting_left_out_of_old_identities(tiny_pair, tmp_path):
    from meap_bench.config import load_checkpoints

    model = tiny_pair["meap"]
    (tmp_path / "c.yaml").write_text(f"- {{name: a, path: {model}, objective: ntp}}\n"
                                     f"- {{name: b, path: {model}, objective: meap, device_map: auto}}\n")
    plain, placed = load_checkpoints(tmp_path / "c.yaml")
    assert "device_map" not in plain.model_dump() and placed.model_dump()["device_map"] == "auto"
