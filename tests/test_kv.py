"""Key-value retrieval: seeded generator, exact gold placement, the official-file loader, sizes that fit
the context, the metric, and one run through the CLI."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from conftest import LLAMA_TOKENIZER, SHARED

from meap_bench.cli import main
from meap_bench.data import lost_in_middle as lim
from meap_bench.errors import UserError
from meap_bench.records import read_records
from meap_bench.tasks.base import ModelContext, Sample
from meap_bench.tasks.kv import KvConfig, KvTask
from meap_bench.tasks.positions import spread_positions
from meap_bench.tokenization import load_tokenizer

LIM_DIR = SHARED / "data" / "lost-in-the-middle"
KV_75 = LIM_DIR / "kv-retrieval-75_keys.jsonl.gz"
JSON_BLOCK = re.compile(r"JSON data:\n(\{.*?\})\n\nKey: ", re.S)


def pairs_in(prompt: str) -> list[tuple[str, str]]:
    """The key-value pairs of a prompt, in order (the block is valid JSON)."""
    block = JSON_BLOCK.search(prompt)
    assert block, prompt[:200]
    return list(json.loads(block.group(1)).items())


@pytest.fixture(scope="module")
def tokenizer(tiny_pair):
    return load_tokenizer(tiny_pair["ntp"])


def test_generator_is_seeded_and_gives_distinct_uuids():
    first, again, other = (lim.synthetic_kv(3, 9, seed) for seed in (5, 5, 6))
    assert first == again and first != other
    for item in first:
        values = [item.key, item.value, *(u for pair in item.distractors for u in pair)]
        assert len(values) == 20 and len(set(values)) == 20
        assert all(uuid.UUID(v).version == 4 for v in values)
    assert lim.synthetic_kv(1, 30, 5)[0].distractors[:9] == first[0].distractors  # prefixes agree


def test_gold_pair_sits_at_exactly_the_requested_position(tokenizer):
    config = KvConfig(n_pairs=[1, 4, 9], positions=[1, 2, 4, 9], samples_per_cell=2, max_new_tokens=4)
    samples = list(KvTask(config, seed=0).samples(ModelContext(tokenizer, 100_000)))
    assert [(s.cell["n_pairs"], s.cell["position"]) for s in samples[:7]] == [
        (1, 1), (4, 1), (4, 2), (4, 4), (9, 1), (9, 2), (9, 4)]
    items = lim.synthetic_kv(2, 8, 0)
    for s in samples:
        item = items[int(s.sample_id.rsplit("kvsyn", 1)[1])]
        pairs = pairs_in(s.prompt_text)
        n, k = s.cell["n_pairs"], s.cell["position"]
        assert len(pairs) == n and pairs[k - 1] == (item.key, item.value)
        assert pairs[: k - 1] + pairs[k:] == list(item.distractors[: n - 1])
        assert s.prompt_text.endswith(f'Key: "{item.key}"\nCorresponding value:')
        assert s.target == f'"{item.value}"'
        gold = tokenizer(s.prompt_text, return_offsets_mapping=True)["offset_mapping"][s.target_offset][0]
        assert s.prompt_text[gold:].startswith(f'"{item.key}": "{item.value}"')


@pytest.mark.skipif(not KV_75.is_file(), reason="../shared/data absent")
def test_official_loader_on_the_75_key_file(tokenizer):
    items = lim.load_kv(LIM_DIR, KV_75.name)
    assert len(items) == 500 and all(len(i.distractors) == 74 for i in items)
    config = KvConfig(source="official", data_dir=str(LIM_DIR), n_pairs=[10, 75], positions=[1, 38, 75],
                      samples_per_cell=2, max_new_tokens=4)
    samples = list(KvTask(config, seed=0).samples(ModelContext(tokenizer, 100_000)))
    assert len(samples) == 2 * (1 + 3)
    for s in samples:
        item = items[int(s.sample_id.rsplit("kv", 1)[1])]
        pairs = pairs_in(s.prompt_text)
        assert pairs[s.cell["position"] - 1] == (item.key, item.value)
        assert [p for p in pairs if p != (item.key, item.value)] == list(item.distractors[: s.cell["n_pairs"] - 1])
    with pytest.raises(UserError, match="has 75"):
        list(KvTask(config.model_copy(update={"n_pairs": [76]}), seed=0).samples(ModelContext(tokenizer, 10**5)))


@pytest.mark.skipif(not (LLAMA_TOKENIZER / "tokenizer.json").is_file(), reason="../shared/data absent")
def test_auto_sizes_fit_the_context_without_skips():
    llama = load_tokenizer(LLAMA_TOKENIZER)
    task = KvTask(KvConfig(samples_per_cell=3, auto_pairs=2, auto_positions=2), seed=0)
    samples = list(task.samples(ModelContext(llama, 4096)))
    sizes = sorted({s.cell["n_pairs"] for s in samples})
    assert 45 <= sizes[-1] <= 60  # a 4k Llama context fits about 55 UUID pairs
    assert all(s.prompt_ids is not None and len(s.prompt_ids) + s.max_new_tokens <= 4096 for s in samples)
    too_big = KvTask(KvConfig(n_pairs=[80], positions=[1], samples_per_cell=1), seed=0)
    skipped = list(too_big.samples(ModelContext(llama, 4096)))
    assert skipped[0].prompt_ids is None and "exceeds" in skipped[0].skip_reason


def test_metric_is_the_gold_value_in_the_output():
    task = KvTask(KvConfig(), seed=0)
    value = "0b018c55-7fd0-48cc-ae57-2f3a45dd94bf"
    sample = Sample("s", {}, f'"{value}"')
    assert task.score(sample, f' "{value}"', [])["contains"] == 1.0
    assert task.score(sample, f"The value is {value}.", [])["contains"] == 1.0
    assert task.score(sample, value[:-1], [])["contains"] == 0.0
    assert task.score(sample, None, [])["contains"] == 0.0
    # as scripts/evaluate_kv_responses.py: ignoring case, anywhere in the whole output (not the first line)
    assert task.score(sample, f"Sure.\nThe value is {value.upper()}", [])["contains"] == 1.0


def test_defaults_follow_the_reference_generation(tokenizer):
    """100 new tokens and no stop string: the reference generates 100 tokens and scores all of them."""
    samples = list(KvTask(KvConfig(n_pairs=[4], samples_per_cell=1), seed=0).samples(ModelContext(tokenizer, 10**5)))
    assert samples and all(s.max_new_tokens == 100 and s.stop == () for s in samples)
    auto = list(KvTask(KvConfig(n_pairs=[4], samples_per_cell=1, max_new_tokens="auto"), seed=0)
                .samples(ModelContext(tokenizer, 10**5)))
    assert all(s.max_new_tokens < 100 for s in auto)  # `auto` (gold value + 8 tokens) stays an option


@pytest.mark.parametrize(("n", "count", "expected"), [
    (75, 4, [1, 25, 50, 75]),                     # the reference's gold indices 0, 24, 49, 74
    (140, 5, [1, 35, 70, 105, 140]),              # 0, 34, 69, 104, 139 (EXPERIMENTS.md)
    (300, 7, [1, 50, 100, 150, 200, 250, 300]),
    (20, 5, [1, 5, 10, 15, 20]),                  # the multi-document positions
    (3, 4, [1, 2, 3]), (1, 4, [1]), (10, 1, [1]),
])
def test_auto_positions_are_the_references(n, count, expected):
    assert spread_positions(n, count) == expected


@pytest.mark.skipif(not KV_75.is_file(), reason="../shared/data absent")
def test_auto_positions_on_the_75_key_file(tokenizer):
    config = KvConfig(source="official", data_dir=str(LIM_DIR), n_pairs=[75], samples_per_cell=1)
    samples = list(KvTask(config, seed=0).samples(ModelContext(tokenizer, 10**5)))
    assert [s.cell["position"] for s in samples] == [1, 25, 50, 75]


def test_run_writes_kv_curves_and_tables(checkpoints_yaml, tmp_path, capsys):
    args = ["run", "--tasks", "kv", "--checkpoints", str(checkpoints_yaml), "--out", str(tmp_path),
            "--run-name", "k", "--device", "cpu", "--set", "kv.n_pairs=2,3", "--set", "kv.samples_per_cell=2",
            "--set", "kv.max_new_tokens=4", "--only", "tiny-ntp"]
    assert main(args) == 0
    records = read_records(tmp_path / "k" / "records.jsonl")
    assert len(records) == 2 * (2 + 3) and {r.status for r in records} == {"ok"}
    assert (tmp_path / "k" / "figures" / "kv_curves.png").stat().st_size > 0
    assert (tmp_path / "k" / "tables" / "kv_averaged.md").is_file()
    capsys.readouterr()
