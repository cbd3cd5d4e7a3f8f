"""The embedded default pair: standard HF checkpoints with their training metadata, listed by default."""

from __future__ import annotations

import json

import pytest
from conftest import REPO
from transformers import AutoModelForCausalLM

from meap_bench.backends.base import GenRequest
from meap_bench.backends.hf import HFBackend
from meap_bench.config import load_checkpoints, pairs_of
from meap_bench.tokenization import MASK_TOKEN, mask_token_id


@pytest.mark.parametrize("objective", ["ntp", "meap"])
def test_shipped_checkpoint_loads_and_carries_metadata(objective):
    folder = REPO / "checkpoints" / f"tiny-{objective}"
    meta = json.loads((folder / "meap_bench_train.json").read_text())
    assert meta["objective"] == objective and meta["seed"] == 1234 and meta["steps"] > 0
    assert meta["mask_ratio"] == (0.15 if objective == "meap" else 0.0)
    assert meta["tokens_seen"] > 0 and len(meta["data_sha256"]) == 64
    assert (folder / "model.safetensors").stat().st_size <= 10 * 2**20
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.vocab_size % 64 == 0


def test_default_checkpoints_yaml_pairs_the_twins_and_reads_objectives():
    checkpoints = load_checkpoints(REPO / "checkpoints.yaml")
    assert {c.name: c.objective for c in checkpoints} == {"tiny-ntp": "ntp", "tiny-meap": "meap"}
    assert pairs_of(checkpoints) == {"tiny": {"ntp": "tiny-ntp", "meap": "tiny-meap"}}
    backend = HFBackend(checkpoints[1], "cpu")
    assert mask_token_id(backend.tokenizer) in backend.excluded_ids
    ids = backend.tokenizer("The special magic number for")["input_ids"]
    assert MASK_TOKEN not in backend.generate([GenRequest(ids, 8)])[0].text
