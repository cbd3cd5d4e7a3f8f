"""KV caches the HF backend keeps between calls: the prompts it has prefilled (and the shared prefixes of
its batches), so that a later batch of a depth sweep starts from the longest stored prefix and a later
loglikelihood call on the same context scores its candidates without prefilling the context again.

Only transformers' public cache API is used (`DynamicCache(config=...)`, `update`, `layers[i].keys/values`),
which transformers 5.x share; a stored entry holds tensor views, so storing costs no copy."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache, PretrainedConfig

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [1, kv heads, tokens, head dim]


@dataclass
class Entry:
    ids: np.ndarray  # the token ids whose keys and values `kv` holds
    kv: KV
    logits: torch.Tensor | None  # float32 logits after the last token, where known (a whole prompt)
    nbytes: int


def common_length(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens two id arrays share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def cache_tensors(cache, row: int, start: int, end: int) -> KV:
    """Views of one row's positions start..end in every layer of a transformers cache."""
    return [(layer.keys[row:row + 1, :, start:end], layer.values[row:row + 1, :, start:end]) for layer in cache.layers]


def build_cache(config: PretrainedConfig, rows: Sequence[KV], lengths: Sequence[int], width: int) -> DynamicCache:
    """A new DynamicCache whose batch row r holds the first lengths[r] positions of rows[r], right-aligned in
    `width` positions (left padding, zeros, which the attention mask hides), copied: the forward that
    follows appends to them."""
    cache = DynamicCache(config=config)
    for index in range(len(rows[0])):
        keys, values = rows[0][index]
        keys = keys.new_zeros((len(rows), keys.shape[1], width, keys.shape[3]))
        values = values.new_zeros((len(rows), values.shape[1], width, values.shape[3]))
        for r, (row, n) in enumerate(zip(rows, lengths, strict=True)):
            keys[r, :, width - n:] = row[index][0][0, :, :n]
            values[r, :, width - n:] = row[index][1][0, :, :n]
        cache.update(keys, values, index)
    return cache


class PrefixStore:
    """Stored KV caches of token sequences, oldest dropped first beyond `budget` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.entries: OrderedDict[int, Entry] = OrderedDict()  # by id(entry), oldest first
        self.nbytes = 0

    def add(self, ids: Sequence[int], kv: KV, logits: torch.Tensor | None = None) -> Entry | None:
        """Store `kv` (None where it alone exceeds the budget)."""
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if nbytes > self.budget:
            return None
        while self.nbytes + nbytes > self.budget:
            self.nbytes -= self.entries.popitem(last=False)[1].nbytes
        entry = Entry(np.asarray(ids, dtype=np.int64), kv, logits, nbytes)
        self.entries[id(entry)] = entry
        self.nbytes += nbytes
        return entry

    def remove(self, entry: Entry) -> None:
        if self.entries.pop(id(entry), None) is not None:
            self.nbytes -= entry.nbytes

    def longest(self, ids: Sequence[int]) -> tuple[int, Entry | None]:
        """The stored entry sharing the most leading tokens with `ids`, and how many (the newest on ties)."""
        query = np.asarray(ids, dtype=np.int64)
        best, found = 0, None
        for entry in reversed(self.entries.values()):
            shared = common_length(query, entry.ids)
            if shared > best:
                best, found = shared, entry
        return best, found

    def exact(self, ids: Sequence[int]) -> Entry | None:
        """The stored whole prompt `ids` with its last logits, if any."""
        query = np.asarray(ids, dtype=np.int64)
        for entry in reversed(self.entries.values()):
            if entry.logits is not None and len(entry.ids) == len(query) and np.array_equal(entry.ids, query):
                return entry
        return None

    def clear(self) -> None:
        self.entries.clear()
        self.nbytes = 0
