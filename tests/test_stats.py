"""Paired statistics against known values: McNemar's exact p on hand tables, Holm's adjustment, the exact
sign-flip test, 95% coverage of the item-clustered bootstrap on seeded clustered data (where resampling
samples falls far short), unweighted strata; and defaults that give every task at least 20 items."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import REPO

from meap_bench.report.stats import Clusters, cluster_bootstrap_interval, compare, holm, mcnemar_exact_p, sign_flip_p
from meap_bench.tasks import TASKS, load_task_config
from meap_bench.tasks.base import ModelContext
from meap_bench.tokenization import load_tokenizer


def table(both: int, meap_only: int, ntp_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired 0/1 scores (ntp, meap) with the given 2x2 counts."""
    ntp = [1] * both + [0] * meap_only + [1] * ntp_only + [0] * neither
    meap = [1] * both + [1] * meap_only + [0] * ntp_only + [0] * neither
    return np.array(ntp, dtype=float), np.array(meap, dtype=float)


@pytest.mark.parametrize(("b", "c", "expected"), [
    (1, 9, 22 / 1024),  # 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024 = 0.02148
    (9, 1, 22 / 1024),
    (0, 6, 2 / 64),
    (3, 3, 1.0),
    (2, 5, 2 * 29 / 128),  # 2 * (1 + 7 + 21) / 2**7 = 0.4531
    (0, 0, 1.0),  # nothing discordant: no evidence either way
])
def test_mcnemar_exact_p_on_hand_tables(b, c, expected):
    ntp, meap = table(both=7, meap_only=b, ntp_only=c, neither=4)  # concordant pairs carry no information
    assert mcnemar_exact_p(ntp, meap) == pytest.approx(expected, rel=1e-12)
    cell = compare(ntp, meap, np.arange(len(ntp)), per_cell=True)
    assert cell["test"] == "McNemar exact" and cell["p_value"] == pytest.approx(expected, rel=1e-12)
    assert (cell["n_items"], cell["n_discordant"], cell["meap_wins"], cell["ntp_wins"]) == (len(ntp), b + c, b, c)
    # the item-level sign-flip test is the same exact sign test on one sample per item
    assert sign_flip_p(meap - ntp, Clusters.of(np.arange(len(ntp)))) == pytest.approx(expected, rel=1e-12)


def test_holm_on_known_values():
    assert holm(np.array([0.01, 0.04, 0.03, 0.005])) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([0.01, 0.02, 0.03])) == pytest.approx([0.03, 0.04, 0.04])  # made monotone
    assert holm(np.array([0.5, 0.6])) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm(np.array([0.02, math.nan, 0.01]))  # NaN is no test: the family has 2 members
    assert math.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.02, 0.02])


def test_sign_flip_is_exact_and_at_item_level():
    # 16 sign patterns of (1, 2, 3, -0.5): |sum| >= 5.5 for 4 of them
    assert sign_flip_p(np.array([1.0, 2.0, 3.0, -0.5]), Clusters.of(np.arange(4))) == pytest.approx(4 / 16)
    # 6 items all better for MEAP: p = 2 / 2**6, however many cells repeat each item
    assert sign_flip_p(np.ones(6), Clusters.of(np.arange(6))) == pytest.approx(2 / 64)
    assert sign_flip_p(np.ones(60), Clusters.of(np.repeat(np.arange(6), 10))) == pytest.approx(2 / 64)
    # seeded draws when exact enumeration is too long: reproducible, close to the exact value, never 0
    diff = np.random.default_rng(3).normal(0.4, 1, 16)
    exact = sign_flip_p(diff, Clusters.of(np.arange(16)), rounds=2**16)
    drawn = sign_flip_p(diff, Clusters.of(np.arange(16)), rounds=9999)
    assert drawn == sign_flip_p(diff, Clusters.of(np.arange(16)), rounds=9999)
    assert abs(drawn - exact) < 0.01 and sign_flip_p(np.ones(40), Clusters.of(np.arange(40))) == 1 / 10000


def clustered(rng: np.random.Generator, items: int, cells: int, truth: float) -> tuple[np.ndarray, np.ndarray]:
    """Differences driven by the item (a shared per-item effect) plus a little per-sample noise."""
    effect = rng.normal(truth, 0.5, items)
    return np.repeat(effect, cells) + rng.normal(0, 0.1, items * cells), np.repeat(np.arange(items), cells)


def test_cluster_bootstrap_covers_95_percent_where_sample_resampling_does_not():
    rng = np.random.default_rng(0)
    truth, runs = 0.1, 200
    cover = {"item": 0, "sample": 0}
    for run in range(runs):
        diff, items = clustered(rng, items=30, cells=8, truth=truth)
        for unit, ids in (("item", items), ("sample", np.arange(len(diff)))):
            low, high = cluster_bootstrap_interval(diff, Clusters.of(ids), rounds=1000, seed=run)
            cover[unit] += low <= truth <= high
    assert 0.90 <= cover["item"] / runs <= 0.985
    assert cover["sample"] / runs < 0.6  # independent-sample resampling is far too narrow here


def test_cluster_interval_is_about_sqrt_cells_wider_on_item_driven_outcomes():
    """20 questions x 13 cells, each question right or wrong for a twin in every cell."""
    rng = np.random.default_rng(1)
    ntp, meap = (np.repeat(rng.integers(0, 2, 20), 13).astype(float) for _ in range(2))
    items = np.repeat(np.arange(20), 13)
    clustered_ci = cluster_bootstrap_interval(meap - ntp, Clusters.of(items))
    naive_ci = cluster_bootstrap_interval(meap - ntp, Clusters.of(np.arange(len(items))))
    ratio = (clustered_ci[1] - clustered_ci[0]) / (naive_ci[1] - naive_ci[0])
    assert 2.5 < ratio < 5  # sqrt(13) = 3.6


def test_strata_are_averaged_unweighted_and_resampled_within():
    """A 200-document task where MEAP wins by 0.5 and a 10-document one where it loses by 0.5 average to 0
    (pooling would say +0.45); the same document id in two tasks is two items."""
    ntp = np.r_[np.zeros(200), np.ones(10)]
    meap = np.r_[np.tile([1.0, 0.0], 100), np.tile([0.0, 1.0], 5)]
    tasks = np.array(["big"] * 200 + ["small"] * 10)
    ids = np.r_[np.arange(200), np.arange(10)].astype(str)
    result = compare(ntp, meap, ids, tasks)
    assert result["meap_minus_ntp"] == pytest.approx(0.0)
    assert result["ntp"] == pytest.approx(0.5) and result["meap"] == pytest.approx(0.5)
    assert result["n_items"] == 210 and result["n"] == 210
    assert result["ci95_low"] < 0 < result["ci95_high"] and result["p_value"] > 0.5
    pooled = compare(ntp, meap, ids)
    assert pooled["meap_minus_ntp"] == pytest.approx(95 / 210) and pooled["n_items"] == 200


@pytest.mark.parametrize("task", ["needle", "mdqa", "kv"])
def test_default_configs_give_at_least_20_distinct_items(task):
    """tasks/<task>.yaml and the config defaults: every cell asks at least 20 distinct items (the same in
    every cell), so the headline interval and test rest on 20 or more. One needle cell is enough: the
    needles do not depend on the grid or the haystack text."""
    small = [("needle", "haystack", "noise"), ("needle", "context_lengths", [512]), ("needle", "depths", [50])]
    config = load_task_config(task, small, REPO / "tasks")
    model = ModelContext(load_tokenizer(REPO / "checkpoints" / "tiny-ntp"), 1024)
    items_per_cell: dict[str, set[str]] = {}
    for sample in TASKS[task](config, seed=0).samples(model):
        items_per_cell.setdefault(str(sorted(sample.cell.items())), set()).add(sample.item_id)
    assert min(len(items) for items in items_per_cell.values()) >= 20
    default = type(config)()
    assert (default.samples_per_cell if task != "mdqa" else default.questions) >= 20
