"""Tokenizer helpers shared by evaluation and the trainer (the only code the trainer shares)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

MASK_TOKEN = "[MASK]"


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a fast tokenizer (offsets are needed for token-exact prompt construction)."""
    return AutoTokenizer.from_pretrained(str(path), use_fast=True)


def mask_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """Id of MEAP's `[MASK]` token, or None when the tokenizer does not know it."""
    token_id = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        return None
    return int(token_id)


def excluded_token_ids(tokenizer: PreTrainedTokenizerBase, model_vocab_size: int) -> list[int]:
    """Ids a fair comparison must never let a model produce or rank first: rows of a padded embedding
    beyond the tokenizer's vocabulary, and MEAP's `[MASK]` (which an NTP twin does not have)."""
    real = len(tokenizer)
    excluded = set(range(real, model_vocab_size))
    mask_id = mask_token_id(tokenizer)
    if mask_id is not None:
        excluded.add(mask_id)
    return sorted(excluded)


def pad_vocab_size(n: int, multiple: int = 64) -> int:
    """Embedding rows for a vocabulary of n tokens, padded as the MEAP reference checkpoints do."""
    return ((n + multiple - 1) // multiple) * multiple
