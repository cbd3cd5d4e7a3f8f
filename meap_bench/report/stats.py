"""Paired MEAP-minus-NTP statistics, clustered by item.

Every item (a needle, a question, a key-value record, an lm-eval document) is asked in every cell of a grid,
so the records of one item are correlated. Intervals resample whole items and tests flip the sign of whole
items, never of single samples: treating a grid's samples as independent makes an interval up to
sqrt(cells) too narrow. Strata (lm-eval tasks) are averaged unweighted, as the paper averages its tasks, and
items are resampled within their stratum."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

BOOTSTRAP_SEED = 0
BOOTSTRAP_ROUNDS = 2000
PERMUTATION_SEED = 0
PERMUTATION_ROUNDS = 9999  # exact (every sign pattern) when 2**items is no more than this
RESAMPLED = "item"
CHUNK = 1 << 22  # array cells per vectorised block, so a 10k-document task stays within memory
AGGREGATE_TEST = "sign-flip permutation over items"
CELL_TESTS = {True: "McNemar exact", False: "sign-flip permutation"}


@dataclass(frozen=True)
class Clusters:
    """Which item (within which stratum) each matched sample belongs to."""

    index: np.ndarray  # per sample: its item's number
    counts: np.ndarray  # per item: its samples
    strata: np.ndarray  # per item: its stratum's number (0 when there are no strata)

    @classmethod
    def of(cls, items: np.ndarray, strata: np.ndarray | None = None) -> Clusters:
        keys = np.asarray(items).astype(str)
        if strata is not None:
            keys = np.char.add(np.char.add(np.asarray(strata).astype(str), "\x00"), keys)
        unique, index = np.unique(keys, return_inverse=True)
        stratum = np.zeros(len(unique), dtype=int)
        if strata is not None:
            stratum[index] = np.unique(np.asarray(strata).astype(str), return_inverse=True)[1]
        return cls(index, np.bincount(index, minlength=len(unique)).astype(float), stratum)

    def sums(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.index, weights=np.asarray(values, dtype=float), minlength=len(self.counts))

    def weights(self) -> np.ndarray:
        """Per item, the weight of its sum in the mean: each stratum's sample mean, strata averaged."""
        n_strata = self.strata.max() + 1
        per_stratum = np.bincount(self.strata, weights=self.counts, minlength=n_strata)
        return 1.0 / (per_stratum[self.strata] * n_strata)

    def mean(self, values: np.ndarray) -> float:
        return float((self.weights() * self.sums(values)).sum()) if len(self.counts) else math.nan


def cluster_bootstrap_interval(diff: np.ndarray, clusters: Clusters, rounds: int = BOOTSTRAP_ROUNDS,
                               seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile 95% interval of the mean difference, resampling whole items (within each stratum) with
    replacement: the interval says how the result would move with another draw of items."""
    if len(clusters.counts) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    all_sums = clusters.sums(diff)
    n_strata = clusters.strata.max() + 1
    total = np.zeros(rounds)
    for s in range(n_strata):
        sums, counts = all_sums[clusters.strata == s], clusters.counts[clusters.strata == s]
        n = len(sums)
        step = max(1, CHUNK // n)
        for start in range(0, rounds, step):
            draw = rng.integers(0, n, size=(min(step, rounds - start), n))
            total[start:start + len(draw)] += sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    low, high = np.quantile(total / n_strata, [0.025, 0.975])
    return float(low), float(high)


def sign_flip_p(diff: np.ndarray, clusters: Clusters, rounds: int = PERMUTATION_ROUNDS,
                seed: int = PERMUTATION_SEED, alternative: Literal["two-sided", "greater"] = "two-sided") -> float:
    """Paired permutation test at item level: with no difference between the twins, each item's MEAP and NTP
    scores are exchangeable, so the sign of each item's summed difference is flipped at random. Two-sided, or
    one-sided for a mean difference greater than 0 (the regression gate). Exact (every sign pattern) when
    2**items <= rounds, else `rounds` seeded patterns (p = (1 + hits) / (1 + rounds), never 0)."""
    if len(clusters.counts) == 0:
        return math.nan
    x = clusters.weights() * clusters.sums(diff)
    x = x[x != 0]  # items without a difference are the same under any sign: leaving them out keeps p exact longer
    fold = np.abs if alternative == "two-sided" else (lambda v: v)
    observed = fold(x.sum()) - 1e-9 * abs(x.sum()) - 1e-15  # ties (common with 0/1 scores) count as extreme
    n = len(x)
    if 2**n <= rounds:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        return float((fold(2 * (bits @ x) - x.sum()) >= observed).mean())
    rng = np.random.default_rng(seed)
    hits = 0
    step = max(1, CHUNK // n)
    for start in range(0, rounds, step):
        size = min(step, rounds - start)
        bits = np.unpackbits(np.frombuffer(rng.bytes(-(-size * n // 8)), dtype=np.uint8))[: size * n]
        hits += int((fold(2 * (bits.reshape(size, n) @ x) - x.sum()) >= observed).sum())
    return (1 + hits) / (1 + rounds)


def mcnemar_exact_p(ntp: np.ndarray, meap: np.ndarray) -> float:
    """McNemar's exact test of paired 0/1 scores: of the discordant pairs, are MEAP's wins (b) and NTP's
    wins (c) a fair coin? Two-sided binomial p of b in b + c; 1 when nothing is discordant."""
    b, c = int(((meap == 1) & (ntp == 0)).sum()), int(((meap == 0) & (ntp == 1)).sum())
    return 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment over a family of tests (NaN entries are not tests and stay NaN):
    the k-th smallest p is multiplied by (m - k + 1), made monotone and capped at 1."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    tested = ~np.isnan(p)
    m = int(tested.sum())
    order = np.argsort(p[tested], kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[tested][order]))
    values = np.empty(m)
    values[order] = adjusted
    out[tested] = values
    return out


def is_binary(*scores: np.ndarray) -> bool:
    return all(np.isin(s, (0.0, 1.0)).all() for s in scores)


def compare(ntp: np.ndarray, meap: np.ndarray, items: np.ndarray, strata: np.ndarray | None = None,
            per_cell: bool = False) -> dict:
    """MEAP minus NTP over matched samples: means, delta, item-clustered bootstrap 95% interval and p-value,
    with the numbers a reader needs beside them (items, samples, discordant pairs). `per_cell` (one sample
    per item) tests 0/1 scores with McNemar's exact test; otherwise, and for the aggregate over cells, the
    item-level sign-flip permutation test."""
    ntp, meap = np.asarray(ntp, dtype=float), np.asarray(meap, dtype=float)
    diff = meap - ntp
    clusters = Clusters.of(items, strata)
    binary = per_cell and is_binary(ntp, meap)
    low, high = cluster_bootstrap_interval(diff, clusters)
    p = mcnemar_exact_p(ntp, meap) if binary else sign_flip_p(diff, clusters)
    return {"n": len(diff), "n_items": len(clusters.counts), "ntp": clusters.mean(ntp), "meap": clusters.mean(meap),
            "meap_minus_ntp": clusters.mean(diff), "ci95_low": low, "ci95_high": high, "resampled": RESAMPLED,
            "p_value": p, "test": CELL_TESTS[binary] if per_cell else AGGREGATE_TEST,
            "n_discordant": int((diff != 0).sum()), "meap_wins": int((diff > 0).sum()),
            "ntp_wins": int((diff < 0).sum())}
