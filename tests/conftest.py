"""Shared fixtures: real tiny Llama checkpoints and a real BPE tokenizer, built in the test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LLAMA_TOKENIZER = SHARED / "data" / "tokenizers" / "meap-llama"

TEXT = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. "
    "In the beginning was the word, and the word was with the people of the valley. "
    "The special magic number for apple is 1234567. What is the special magic number for apple? "
    "Question: Answer: Read the text below and answer the question at the end. "
    "Rivers run to the sea, yet the sea is not full. Every morning the baker opens the shop at six. "
    "0123456789 0 1 2 3 4 5 6 7 8 9 the of and to in is was for on that with as by "
)


def build_tokenizer(folder: Path, vocab_size: int = 400, texts: list[str] | None = None,
                    special_tokens: tuple[str, ...] = ("<s>", "</s>", "[MASK]")):
    """A byte-level BPE (by default with `[MASK]` declared at training time), saved as a HF tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts or [TEXT] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(folder)
    return fast


def build_model(folder: Path, tokenizer, vocab_rows: int, seed: int = 0, max_positions: int = 512) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_rows, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory) -> dict[str, Path]:
    """Two tiny random Llama checkpoints sharing one tokenizer: the MEAP one pads its vocabulary to 64."""
    root = tmp_path_factory.mktemp("tiny_pair")
    tokenizer = build_tokenizer(root / "tokenizer")
    ntp = build_model(root / "ntp", tokenizer, len(tokenizer), seed=1)
    meap = build_model(root / "meap", tokenizer, ((len(tokenizer) + 63) // 64) * 64, seed=2)
    return {"ntp": ntp, "meap": meap, "root": root}


@pytest.fixture(scope="session")
def checkpoints_yaml(tiny_pair) -> Path:
    path = tiny_pair["root"] / "checkpoints.yaml"
    path.write_text(
        f"- name: tiny-ntp\n  path: {tiny_pair['ntp']}\n  objective: ntp\n  pair: tiny\n"
        f"- name: tiny-meap\n  path: {tiny_pair['meap']}\n  objective: meap\n  pair: tiny\n"
    )
    return path
