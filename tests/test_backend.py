"""HF backend on real tiny Llama checkpoints: batching, loglikelihood, real-vocabulary masking."""

from __future__ import annotations

import re

import torch
from transformers import AutoModelForCausalLM

from meap_bench.backends.base import GenRequest, LLRequest
from meap_bench.backends.hf import HFBackend
from meap_bench.config import Checkpoint
from meap_bench.tokenization import mask_token_id

PROMPTS = ["The quick brown fox", "In the beginning was the word and the word", "Rivers",
           "The special magic number for apple is", "Every morning the baker opens the shop at six."]


def backend(path, batch_size: int = 8) -> HFBackend:
    return HFBackend(Checkpoint(name="t", path=str(path), objective="ntp", batch_size=batch_size), "cpu")


def test_batched_generation_equals_one_at_a_time(tiny_pair):
    b = backend(tiny_pair["meap"], batch_size=4)
    requests = [GenRequest(b.tokenizer(p)["input_ids"], 10) for p in PROMPTS]
    batched = b.generate(requests)
    single = [b.generate([r])[0] for r in requests]
    assert [o.token_ids for o in batched] == [o.token_ids for o in single]
    assert [o.text for o in batched] == [o.text for o in single]
    assert all(len(o.token_ids) == 10 for o in batched)


def test_stop_strings_cut_the_output(tiny_pair):
    b = backend(tiny_pair["ntp"])
    ids = b.tokenizer(PROMPTS[0])["input_ids"]
    full = b.generate([GenRequest(ids, 12)])[0].text
    stop = full[3:5]
    cut = b.generate([GenRequest(ids, 12, (stop,))])[0].text
    assert cut == full[: full.index(stop)]


def test_each_row_stops_at_its_own_stop_strings_and_length(tiny_pair):
    """One batch mixing requests with different stop strings and lengths: every output equals running that
    request alone (a row is not cut at another row's stop string), and the batch ends when every row has."""
    b = backend(tiny_pair["ntp"])
    prompt_a, prompt_b = (b.tokenizer(p)["input_ids"] for p in PROMPTS[:2])
    full_a = b.generate([GenRequest(prompt_a, 12)])[0]
    stop = next(m.group() for m in re.finditer("[a-z]{2}", full_a.text))  # early in A's output
    assert len(full_a.token_ids) == 12 and full_a.text.index(stop) < len(full_a.text) // 2
    requests = [GenRequest(prompt_a, 12), GenRequest(prompt_b, 4, (stop,)), GenRequest(prompt_a, 12, (stop,)),
                GenRequest(prompt_b, 3)]
    single = [b.generate([r])[0] for r in requests]
    assert single[0] == full_a and stop not in single[2].text and len(single[2].token_ids) < 12
    forwards = []
    hook = b.model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        assert b.generate(requests) == single
        forwards.clear()
        b.generate(requests[2:])  # one row ends at its stop string, the other after 3 tokens: no 12-token run
        assert len(forwards) == max(len(o.token_ids) for o in single[2:]) < 12
    finally:
        hook.remove()


def test_loglikelihood_equals_hand_computed_sum(tiny_pair):
    b = backend(tiny_pair["ntp"])
    tok = b.tokenizer
    requests = [LLRequest(tok(p)["input_ids"], tok(" the word", add_special_tokens=False)["input_ids"])
                for p in PROMPTS]
    outputs = b.loglikelihood(requests)
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["ntp"]).eval()
    for request, output in zip(requests, outputs, strict=True):
        ids = torch.tensor([request.context_ids + request.continuation_ids])
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        logits[:, mask_token_id(tok)] = float("-inf")  # the real vocabulary excludes MEAP's [MASK]
        logprobs = torch.log_softmax(logits, -1)
        n = len(request.context_ids)
        expected = sum(logprobs[n - 1 + i, t].item() for i, t in enumerate(request.continuation_ids))
        greedy = all(logprobs[n - 1 + i].argmax().item() == t for i, t in enumerate(request.continuation_ids))
        assert abs(output.logprob - expected) < 1e-4
        assert output.is_greedy == greedy


def test_greedy_continuation_is_greedy(tiny_pair):
    b = backend(tiny_pair["ntp"])
    ids = b.tokenizer(PROMPTS[1])["input_ids"]
    generated = b.generate([GenRequest(ids, 5)])[0].token_ids
    assert b.loglikelihood([LLRequest(ids, generated)])[0].is_greedy


def test_padding_rows_and_mask_are_never_produced(tiny_pair, tmp_path):
    """Make [MASK] and every padding row the most likely token everywhere: the backend must still never
    generate them, and no continuation through them may count as greedy."""
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["meap"])
    b = backend(tiny_pair["meap"])
    forbidden = b.excluded_ids
    mask_id = mask_token_id(b.tokenizer)
    assert mask_id in forbidden and max(forbidden) == model.config.vocab_size - 1
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head.mul_(0.01)
        head[forbidden] = 100.0 * head[forbidden]
    model.save_pretrained(tmp_path)
    b.tokenizer.save_pretrained(tmp_path)
    rigged = backend(tmp_path)
    raw = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = rigged.tokenizer(PROMPTS[0])["input_ids"]
    with torch.no_grad():
        assert raw(torch.tensor([ids])).logits[0, -1].argmax().item() in forbidden
    outputs = rigged.generate([GenRequest(rigged.tokenizer(p)["input_ids"], 8) for p in PROMPTS])
    assert not {t for o in outputs for t in o.token_ids} & set(forbidden)
    assert "[MASK]" not in "".join(o.text for o in outputs)
    out = rigged.loglikelihood([LLRequest(ids, [mask_id])])[0]
    assert out.logprob == float("-inf") and not out.is_greedy
