"""vLLM backend contract, against tests/fake_vllm.py (vLLM's documented offline types over a real tiny
transformers model): the requests it builds, how it reads results, greedy check and masked ids over the real
vocabulary, errors, the lm-eval adapter over it, and a run through the CLI. Real-engine tests are marked
`vllm` and skip unless vllm imports: `python -m pytest -m vllm tests/test_vllm_backend.py` on a CUDA machine."""

from __future__ import annotations

import importlib.util
import json
import math

import fake_vllm
import pytest
import torch
from transformers import AutoModelForCausalLM

from meap_bench.backends import REGISTRY, load_backend
from meap_bench.backends.base import PREFIX_REUSE, REAL_VOCAB, GenRequest, LLRequest
from meap_bench.backends.hf import HFBackend
from meap_bench.backends.vllm import VLLMBackend
from meap_bench.cli import main
from meap_bench.config import Checkpoint
from meap_bench.errors import UserError
from meap_bench.records import read_records
from meap_bench.tokenization import mask_token_id

PROMPTS = ["The quick brown fox", "In the beginning was the word and the word", "Rivers",
           "The special magic number for apple is", "Every morning the baker opens the shop at six."]


def checkpoint(path, **extra) -> Checkpoint:
    return Checkpoint(name="t", path=str(path), objective="meap", **extra)


@pytest.fixture
def vllm(monkeypatch):
    return fake_vllm.install(monkeypatch)


def requests_of(tokenizer) -> tuple[list[GenRequest], list[LLRequest]]:
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    gen = [GenRequest(i, 8, ("\n", ".") if k % 2 else ()) for k, i in enumerate(ids)]
    ll = [LLRequest(i[:-2], i[-2:]) for i in ids if len(i) > 2] + [LLRequest(ids[0], ids[1][:3]),
                                                                    LLRequest(ids[0], ids[2])]
    return gen, ll


def test_requests_follow_the_documented_types_and_settings(vllm, tiny_pair):
    settings = {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "max_model_len": 256}
    b = VLLMBackend(checkpoint(tiny_pair["meap"], vllm=settings))
    assert b.capabilities == REGISTRY["vllm"].capabilities == {PREFIX_REUSE} and REAL_VOCAB not in b.capabilities
    assert not vllm.LLM.instances  # the engine starts on first use only
    gen, ll = requests_of(b.tokenizer)
    b.generate(gen)
    (engine,) = vllm.LLM.instances
    assert engine.options["enable_prefix_caching"] is True
    assert {k: engine.options[k] for k in settings} == settings and b.max_length == 256
    prompts, params = engine.calls[0]
    assert [p["prompt_token_ids"] for p in prompts] == [r.prompt_ids for r in gen]
    mask_id = mask_token_id(b.tokenizer)
    for request, p in zip(gen, params, strict=True):
        assert p.temperature == 0.0 and p.max_tokens == request.max_new_tokens
        assert p.stop == (list(request.stop) or None) and not p.include_stop_str_in_output
        assert mask_id not in p.allowed_token_ids and max(p.allowed_token_ids) < len(b.tokenizer)
    b.loglikelihood(ll)
    prompts, params = engine.calls[1]
    assert [p["prompt_token_ids"] for p in prompts] == [r.context_ids + r.continuation_ids for r in ll]
    assert params.max_tokens == 1 and params.prompt_logprobs == 1 + len(b.excluded_ids)


def test_outputs_match_the_hf_backend(vllm, tiny_pair):
    """Same greedy texts and ids; same greedy flags; logprobs lower by exactly the probability mass vLLM
    leaves on [MASK] and padding rows (full-vocabulary normalisation)."""
    b, hf = VLLMBackend(checkpoint(tiny_pair["meap"])), HFBackend(checkpoint(tiny_pair["meap"]), "cpu")
    gen, ll = requests_of(b.tokenizer)
    assert b.generate(gen) == hf.generate(gen)
    ours, theirs = b.loglikelihood(ll), hf.loglikelihood(ll)
    assert [o.is_greedy for o in ours] == [o.is_greedy for o in theirs]
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["meap"]).eval()
    for request, a, c in zip(ll, ours, theirs, strict=True):
        ids = request.context_ids + request.continuation_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, len(request.context_ids) - 1:-1].float()
        real = torch.ones(logits.shape[-1], dtype=torch.bool)
        real[hf.excluded_ids] = False
        mass = (torch.logsumexp(logits[:, real], -1) - torch.logsumexp(logits, -1)).sum().item()
        assert a.logprob < c.logprob and math.isclose(a.logprob, c.logprob + mass, abs_tol=1e-4)


def test_masked_ids_never_generated_and_greedy_is_over_the_real_vocabulary(vllm, tiny_pair, tmp_path):
    """[MASK] and padding rows made the most likely tokens everywhere: never generated, and a continuation
    of real argmax tokens is greedy although excluded ids outrank it."""
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["meap"])
    hf = HFBackend(checkpoint(tiny_pair["meap"]), "cpu")
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head.mul_(0.01)
        head[hf.excluded_ids] = 100.0 * head[hf.excluded_ids]
    model.save_pretrained(tmp_path)
    hf.tokenizer.save_pretrained(tmp_path)
    b, rigged = VLLMBackend(checkpoint(tmp_path)), HFBackend(checkpoint(tmp_path), "cpu")
    ids = b.tokenizer(PROMPTS[0])["input_ids"]
    out = b.generate([GenRequest(ids, 6)])[0]
    assert not set(out.token_ids) & set(b.excluded_ids) and out == rigged.generate([GenRequest(ids, 6)])[0]
    request = LLRequest(ids, out.token_ids)
    (engine,) = fake_vllm.LLM.instances
    top = engine.generate([fake_vllm.TokensPrompt(prompt_token_ids=ids + out.token_ids)],
                          fake_vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1))[0]
    assert top.prompt_logprobs[len(ids)][out.token_ids[0]].rank > 1  # an excluded id outranks it in vLLM
    assert b.loglikelihood([request])[0].is_greedy and rigged.loglikelihood([request])[0].is_greedy
    assert not b.loglikelihood([LLRequest(ids, [mask_token_id(b.tokenizer)])])[0].is_greedy


def test_errors(vllm, tiny_pair, monkeypatch):
    b = VLLMBackend(checkpoint(tiny_pair["ntp"], max_length=16))
    with pytest.raises(ValueError, match="exceed max_model_len 16"):
        b.generate([GenRequest(list(range(5, 15)), 8)])
    with pytest.raises(ValueError, match="non-empty continuation"):
        b.loglikelihood([LLRequest([5, 6], [])])
    with pytest.raises(ValueError, match="empty prompt"):
        b.loglikelihood([LLRequest([], [5])])
    with pytest.raises(UserError, match="runs on GPUs"):
        VLLMBackend(checkpoint(tiny_pair["ntp"]), device="cpu")
    monkeypatch.setitem(__import__("sys").modules, "vllm", None)  # as when vllm is not installed
    with pytest.raises(UserError, match=r"pip install 'meap-bench\[vllm\]'"):
        VLLMBackend(checkpoint(tiny_pair["ntp"])).generate([GenRequest([5, 6], 2)])


def test_lm_eval_adapter_works_over_it_unchanged(vllm, tiny_pair):
    from lm_eval.api.instance import Instance

    from meap_bench.backends.lm_eval_adapter import MeapBenchLM

    ours, hf = MeapBenchLM(VLLMBackend(checkpoint(tiny_pair["meap"]))), MeapBenchLM(
        HFBackend(checkpoint(tiny_pair["meap"]), "cpu"))
    generate = [Instance("generate_until", {}, (t, {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}), i)
                for i, t in enumerate(PROMPTS[:3])]
    assert ours.generate_until(generate) == hf.generate_until(generate)
    choices = [Instance("loglikelihood", {}, ("Rivers run to the", c), i) for i, c in enumerate([" sea", " shop"])]
    a, c = ours.loglikelihood(choices), hf.loglikelihood(choices)
    assert [g for _, g in a] == [g for _, g in c] and all(x < y for (x, _), (y, _) in zip(a, c, strict=True))


def test_run_through_the_cli_records_its_capabilities(vllm, checkpoints_yaml, tmp_path, capsys):
    grid = ["--set", "needle.context_lengths=128", "--set", "needle.depths=50", "--set", "needle.haystack=noise",
            "--set", "needle.samples_per_cell=2", "--set", "needle.distractors=1"]
    assert main(["run", "--tasks", "needle", "--checkpoints", str(checkpoints_yaml), "--out", str(tmp_path),
                 "--run-name", "v", "--backend", "vllm", *grid]) == 0
    records = read_records(tmp_path / "v" / "records.jsonl")
    assert len(records) == 4 and {(r.backend, tuple(r.capabilities)) for r in records} == {("vllm", (PREFIX_REUSE,))}
    assert json.loads((tmp_path / "v" / "run.json").read_text())["capabilities"] == [PREFIX_REUSE]
    assert "normalises loglikelihoods over the full vocabulary" in capsys.readouterr().err


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                    reason="needs vllm and a CUDA GPU")
def test_real_engine_matches_the_hf_backend(tiny_pair):
    """On a real vLLM engine: the same greedy outputs and greedy flags as the HF backend (float32)."""
    b = load_backend(checkpoint(tiny_pair["meap"], dtype="float32",
                                vllm={"gpu_memory_utilization": 0.3, "max_model_len": 256}), "vllm")
    hf = HFBackend(checkpoint(tiny_pair["meap"], dtype="float32"), "cuda")
    gen, ll = requests_of(b.tokenizer)
    assert [o.token_ids for o in b.generate(gen)] == [o.token_ids for o in hf.generate(gen)]
    ours, theirs = b.loglikelihood(ll), hf.loglikelihood(ll)
    assert [o.is_greedy for o in ours] == [o.is_greedy for o in theirs]
    assert all(a.logprob <= c.logprob + 1e-3 for a, c in zip(ours, theirs, strict=True))
