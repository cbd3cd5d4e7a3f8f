"""Attention summaries: the backend's numbers against a hand computation on a hand-set model and against
transformers' own attention maps, batching, exact spans for BPE and SentencePiece, and the task end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LLAMA_TOKENIZER
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from meap_bench.backends.base import AttnRequest
from meap_bench.backends.hf import HFBackend
from meap_bench.cli import main
from meap_bench.config import Checkpoint
from meap_bench.errors import UserError
from meap_bench.records import read_records, sha256_json
from meap_bench.runner import RunPlan, check_capabilities
from meap_bench.tasks import ModelContext, load_task_config
from meap_bench.tasks.attention import AttentionConfig, AttentionTask
from meap_bench.tasks.mdqa import MdqaConfig, MdqaTask
from meap_bench.tasks.needle import NeedleConfig, NeedleTask
from meap_bench.tokenization import load_tokenizer

Q_SCALES = [0.0, 2.0, -1.5, 3.0]  # per query head; head 0 has q = 0: uniform attention
K_SCALES = [1.0, 2.5]  # per key/value head; query heads 0-1 read key head 0, heads 2-3 key head 1
SPANS = {"early": (1, 6), "middle": (9, 17), "late": (20, 30)}


@pytest.fixture(scope="module")
def rope_model(tiny_pair, tmp_path_factory) -> Path:
    """A Llama whose every layer has q = (Q_SCALES[h], 0) and k = (K_SCALES[g], 0) at every position
    (zero projection weights, constant biases, head_dim 2): after RoPE (frequency 1), the logit of query m
    on key n is Q*K*cos(m - n)/sqrt(2), whatever the tokens and layers."""
    folder = tmp_path_factory.mktemp("rope")
    tokenizer = load_tokenizer(tiny_pair["ntp"])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=2, attention_bias=True,
                         max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            attn = layer.self_attn
            attn.q_proj.weight.zero_()
            attn.k_proj.weight.zero_()
            attn.q_proj.bias.copy_(torch.tensor([[s, 0.0] for s in Q_SCALES]).flatten())
            attn.k_proj.bias.copy_(torch.tensor([[s, 0.0] for s in K_SCALES]).flatten())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def backend_of(path: Path, batch_size: int = 8) -> HFBackend:
    return HFBackend(Checkpoint(name="m", path=str(path), objective="ntp", batch_size=batch_size), device="cpu")


def hand_weights(query: int) -> np.ndarray:
    """[heads, query + 1] attention weights of the rope model, computed by hand."""
    keys = np.arange(query + 1)
    rows = []
    for h, q in enumerate(Q_SCALES):
        logits = q * K_SCALES[h // 2] * np.cos(query - keys) / math.sqrt(2)
        weights = np.exp(logits - logits.max())
        rows.append(weights / weights.sum())
    return np.array(rows)


def test_span_mass_and_entropy_equal_a_hand_computation(rope_model):
    backend = backend_of(rope_model)
    queries = (29, 35, 40)
    ids = list(range(5, 5 + 41))
    (out,) = backend.attention([AttnRequest(ids, queries, SPANS)])
    assert out.entropy.shape == (3, 2, 4) and set(out.mass) == set(SPANS)
    for i, query in enumerate(queries):
        weights = hand_weights(query)
        for name, (start, end) in SPANS.items():
            for layer in range(2):
                np.testing.assert_allclose(out.mass[name][i, layer], weights[:, start:end].sum(1), atol=1e-6)
        entropy = -(weights * np.log(weights)).sum(1)
        np.testing.assert_allclose(out.entropy[i], np.broadcast_to(entropy, (2, 4)), atol=1e-5)
    # head 0 attends uniformly: mass = span length / (query + 1), entropy = log(query + 1)
    assert out.mass["middle"][0, 0, 0] == pytest.approx(8 / 30, abs=1e-6)
    assert out.entropy[2, 1, 0] == pytest.approx(math.log(41), abs=1e-5)
    assert backend.model.config._attn_implementation == "sdpa"  # the probe is gone after the call


def requests(seed: int = 0) -> list[AttnRequest]:
    rng = np.random.default_rng(seed)
    out = []
    for n in (37, 120, 64, 90, 12):
        ids = rng.integers(3, 300, size=n).tolist()
        out.append(AttnRequest(ids, (n - 4, n - 1), {"a": (1, n // 3), "b": (n // 3, n - 5)}))
    return out


def test_summaries_match_transformers_attention_maps_and_batching(tiny_pair):
    """Against the full maps of eager attention (output_attentions) on a random model with grouped-query
    heads; batched rows equal rows run alone (float32 rounding, far below the records' 1e-5)."""
    batched = backend_of(tiny_pair["ntp"], batch_size=8).attention(requests())
    alone = backend_of(tiny_pair["ntp"], batch_size=1).attention(requests())
    eager = AutoModelForCausalLM.from_pretrained(tiny_pair["ntp"], attn_implementation="eager").eval()
    for request, together, single in zip(requests(), batched, alone, strict=True):
        for name in request.spans:
            np.testing.assert_allclose(together.mass[name], single.mass[name], atol=1e-6)
        np.testing.assert_allclose(together.entropy, single.entropy, atol=1e-5)
        with torch.no_grad():
            maps = eager(input_ids=torch.tensor([request.input_ids]), output_attentions=True).attentions
        rows = torch.stack([m[0] for m in maps])[:, :, list(request.queries)].permute(2, 0, 1, 3).double().numpy()
        for name, (start, end) in request.spans.items():
            np.testing.assert_allclose(single.mass[name], rows[..., start:end].sum(-1), atol=1e-6)
        logs = np.log(np.where(rows > 0, rows, 1.0))
        np.testing.assert_allclose(single.entropy, -(rows * logs).sum(-1), atol=1e-5)


def covering_tokens(offsets: list[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of the tokens whose characters overlap [start, end)."""
    return [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]


def check_spans(samples, tokenizer, instruction: str) -> None:
    """Every recorded span is exactly the tokens that overlap its text (from the tokenizer's offsets)."""
    built = [s for s in samples if s.prompt_ids is not None]
    assert built
    for s in built:
        text = s.prompt_text
        offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        question = text.rindex("Question: ")
        context_end = text.rindex("\n\nQuestion: ")
        context_start = text.index(instruction) + len(instruction) + 2
        target = s.meta["fact"] if "fact" in s.meta else s.meta["gold"]
        chars = {"target": (text.index(target), text.index(target) + len(target)),
                 "context": (context_start, context_end),
                 "question": (question, text.index("\n", question)),
                 "instruction": (text.index(instruction), text.index(instruction) + len(instruction))}
        for name, (start, end) in chars.items():
            first, last = s.meta["spans"][name]
            assert list(range(first, last)) == covering_tokens(offsets, start, end), (s.sample_id, name)
            assert target.split()[-1] in tokenizer.decode(s.prompt_ids[slice(*s.meta["spans"]["target"])])
        assert s.target_offset == s.meta["spans"]["target"][0]


def spans_of_both_sources(tokenizer, haystack: Path, max_length: int, lengths: list[int]):
    needle = NeedleTask(NeedleConfig(haystack=f"dir:{haystack}", samples_per_cell=2, context_lengths=lengths,
                                     depths=[0, 40, 100]), seed=0)
    model = ModelContext(tokenizer, max_length)
    needles = list(needle.samples(model))
    mdqa = MdqaTask(MdqaConfig(n_docs=[3, 5], questions=2, closed_book=False), seed=0)
    documents = list(mdqa.samples(model))
    for s in documents:  # the gold document's text, as rendered
        k = s.cell["position"]
        line = next(x for x in s.prompt_text.splitlines() if x.startswith(f"Document [{k}]("))
        s.meta["gold"] = line
    return needles, documents


@pytest.fixture(scope="module")
def haystack(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hay")
    (folder / "a.txt").write_text(" ".join(f"Verse {i} says the {['ox', 'dove', 'king'][i % 3]} went up to the "
                                           f"hill at dawn." for i in range(300)))
    return folder


def test_spans_are_exact_for_the_bpe_tokenizer(tiny_pair, haystack):
    tokenizer = load_tokenizer(tiny_pair["ntp"])
    needles, documents = spans_of_both_sources(tokenizer, haystack, 512, [128, 300])
    check_spans(needles, tokenizer, NeedleConfig().instruction)
    check_spans(documents, tokenizer, MdqaConfig().instruction)


@pytest.mark.skipif(not LLAMA_TOKENIZER.is_dir(), reason="../shared is absent")
def test_spans_are_exact_for_the_llama_sentencepiece_tokenizer(haystack):
    tokenizer = load_tokenizer(LLAMA_TOKENIZER)
    needles, documents = spans_of_both_sources(tokenizer, haystack, 4096, [200, 900])
    check_spans(needles, tokenizer, NeedleConfig().instruction)
    check_spans(documents, tokenizer, MdqaConfig().instruction)


def test_attention_samples_reuse_the_source_prompts_and_keep_their_hashes(tiny_pair, haystack):
    tokenizer = load_tokenizer(tiny_pair["ntp"])
    model = ModelContext(tokenizer, 512)
    needle_config = NeedleConfig(haystack=f"dir:{haystack}", samples_per_cell=2, context_lengths=[128, 1024],
                                 depths=[50])
    sources = list(NeedleTask(needle_config, seed=3).samples(model))
    config = AttentionConfig(sources=["needle"], needle=needle_config, answer_tokens=True)
    samples = list(AttentionTask(config, seed=3).samples(model))
    assert [s.sample_id for s in samples] == [f"needle/{s.sample_id}" for s in sources]
    assert [s.item_id for s in samples] == [s.item_id for s in sources]
    for source, sample in zip(sources, samples, strict=True):
        # the needle task's own request hash is what it always was (resume of old runs keeps working)
        if source.prompt_ids is not None:
            assert source.request_sha256 == sha256_json([source.prompt_ids, source.max_new_tokens,
                                                         list(source.stop), source.choices])
            answer = source.choices[0]
            assert sample.prompt_ids == source.prompt_ids and sample.max_new_tokens == 0 and not sample.choices
            assert sample.attention.input_ids == source.prompt_ids + answer[:-1]
            last = len(source.prompt_ids) - 1
            assert sample.attention.queries == tuple(range(last, last + len(answer)))
        else:
            assert sample.prompt_ids is None and "1024 > checkpoint max length 512" in sample.skip_reason


def test_a_backend_without_the_capability_is_refused_before_any_work(tiny_pair, tmp_path):
    backend = backend_of(tiny_pair["ntp"])
    backend.capabilities = frozenset()  # as a backend that cannot return attention declares itself
    plan = RunPlan(tmp_path, [], {"attention": AttentionConfig()}, 0, None, "other", "cpu")
    with pytest.raises(UserError, match="task 'attention' needs the backend capability 'attention'"):
        check_capabilities(plan, backend)
    with pytest.raises(UserError, match="closed-book prompts have no document"):
        load_task_config("attention", [("attention", "mdqa.closed_book", True)])


def test_run_attention_end_to_end(checkpoints_yaml, tmp_path, capsys):
    args = ["run", "--tasks", "attention", "--checkpoints", str(checkpoints_yaml), "--out", str(tmp_path),
            "--run-name", "a", "--device", "cpu", "--set", "attention.needle.context_lengths=128,256",
            "--set", "attention.needle.depths=0,100", "--set", "attention.needle.haystack=noise",
            "--set", "attention.needle.samples_per_cell=2", "--set", "attention.mdqa.n_docs=3",
            "--set", "attention.mdqa.questions=3"]
    assert main(args) == 0
    run_dir = tmp_path / "a"
    records = read_records(run_dir / "records.jsonl")
    assert len(records) == 2 * (2 * 2 * 2 + 3 * (1 + 3)) and {r.status for r in records} == {"ok"}
    for r in records:
        s = r.scores
        parts = s["target_mass"] + s["distractor_mass"] + s["instruction_mass"] + s["question_mass"]
        assert parts + s["rest_mass"] == pytest.approx(1.0) and 0 < parts < 1
        per_head = np.array(r.meta["layer_head"]["target"])
        assert per_head.shape == (2, 4) and per_head.mean() == pytest.approx(s["target_mass"], abs=1e-5)
        assert np.array(r.meta["layer"]["entropy"]).mean() == pytest.approx(s["entropy"], abs=1e-5)
        assert r.output is None and r.meta["queries"] == [r.prompt_tokens - 1]
    for name in ["attention_paper", "attention_needle_cells", "attention_mdqa_cells", "attention_pairs"]:
        assert (run_dir / "tables" / f"{name}.md").is_file()
    for name in ["attention_layer_head_tiny-ntp", "attention_layer_head_pair_tiny", "attention_needle_pair_tiny",
                 "attention_mdqa_pair_tiny", "attention_pair_tiny", "attention_needle_heatmap_tiny-meap"]:
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 0
    paper = json.loads((run_dir / "summary.json").read_text())["tasks"]["attention"]["paper"]
    share = next(p for p in paper if p["source"] == "needle" and p["quantity"] == "answer-span share (%)")
    assert share["n"] == 8 and share["ci95_low"] <= share["meap_minus_ntp"] <= share["ci95_high"]
    before = (run_dir / "records.jsonl").read_bytes()
    assert main(args) == 0
    assert (run_dir / "records.jsonl").read_bytes() == before  # resumed: nothing recomputed
    capsys.readouterr()
