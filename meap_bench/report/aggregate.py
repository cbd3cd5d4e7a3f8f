"""Records -> pandas: cell means, per-checkpoint summaries and paired MEAP-minus-NTP statistics (clustered by
item, see stats.py), over a whole task and per cell."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from meap_bench.records import read_records
from meap_bench.report.stats import compare, holm


def load_frame(run_dir: Path) -> pd.DataFrame:
    """One row per record; `cell.*` and `score.*` columns flattened out of the dicts."""
    rows = []
    for record in read_records(run_dir / "records.jsonl"):
        row = dict(vars(record))  # a shallow copy: asdict's deep copy costs more than the rest of the report
        row.update({f"cell.{k}": v for k, v in row.pop("cell").items()})
        row.update({f"score.{k}": v for k, v in row.pop("scores").items()})
        rows.append(row)
    return pd.DataFrame(rows)


def headline_metrics(run_dir: Path) -> dict[str, str]:
    tasks = json.loads((run_dir / "run.json").read_text())["tasks"]
    return {name: cfg.get("headline_metric", "contains") for name, cfg in tasks.items()}


def cell_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if c.startswith("cell.") and frame[c].notna().any())


def cell_means(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean of `metric` per checkpoint and cell; a cell whose samples were all skipped has NaN and
    `skipped` True."""
    cells = cell_columns(frame)
    column = f"score.{metric}"
    grouped = frame.groupby(["checkpoint", *cells], sort=True, dropna=False)
    out = grouped.agg(n=("status", "size"), n_ok=("status", lambda s: int((s == "ok").sum())))
    out["mean"] = grouped[column].mean() if column in frame else np.nan
    out["skipped"] = out["n_ok"] == 0
    return out.reset_index()


def checkpoint_summary(frame: pd.DataFrame, strata: str | None = None) -> pd.DataFrame:
    """Per checkpoint: samples, skipped samples and the mean of every score over the samples run; with
    `strata` (a column), the unweighted mean over strata of each stratum's mean (the paper's average of
    lm-eval tasks)."""
    scores = sorted(c for c in frame.columns if c.startswith("score."))
    ok = frame[frame["status"] == "ok"]
    if not scores:
        summary = pd.DataFrame(index=[])
    elif strata:
        summary = ok.groupby(["checkpoint", strata])[scores].mean().groupby("checkpoint").mean()
    else:
        summary = ok.groupby("checkpoint")[scores].mean()
    summary.columns = [c.removeprefix("score.") for c in summary.columns]
    counts = frame.groupby("checkpoint")["status"].agg(
        samples=lambda s: int((s == "ok").sum()), skipped=lambda s: int((s != "ok").sum()))
    meta = frame.groupby("checkpoint")[["objective", "pair"]].first()
    return meta.join(counts).join(summary).reset_index()


def matched(frame: pd.DataFrame, metric: str) -> Iterator[tuple[str, pd.DataFrame]]:
    """Per complete pair, the samples both members ran (matched by sample id): `ntp` and `meap` scores,
    `item_id` and the cell columns."""
    column = f"score.{metric}"
    if column not in frame:
        return
    ok = frame[frame["status"] == "ok"]
    cells = cell_columns(frame)
    for pair, members in ok.groupby("pair", sort=True):
        sides = {obj: m.set_index("sample_id") for obj, m in members.groupby("objective")}
        if set(sides) != {"ntp", "meap"}:
            continue
        joined = pd.concat({"ntp": sides["ntp"][column], "meap": sides["meap"][column]}, axis=1).dropna()
        yield str(pair), joined.join(sides["ntp"][["item_id", *cells]])


def paired_differences(frame: pd.DataFrame, metric: str, strata: str | None = None) -> pd.DataFrame:
    """MEAP minus NTP per pair over every matched sample of the frame: delta, a 95% interval resampling
    items, the item-level sign-flip permutation p, items, samples and discordant pairs. With `strata`
    (a column), each stratum's delta is averaged unweighted and items are resampled within their stratum."""
    rows = []
    for pair, joined in matched(frame, metric):
        groups = joined[strata].to_numpy() if strata else None
        stats = compare(joined["ntp"], joined["meap"], joined["item_id"].to_numpy(), groups)
        rows.append({"pair": pair, "metric": metric, **stats})
    return pd.DataFrame(rows)


def paired_cells(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """MEAP minus NTP per pair and cell: interval over the cell's items, McNemar's exact p for 0/1 scores
    (a paired permutation p otherwise) and the Holm-adjusted p over the cells of the pair's grid."""
    parts = []
    for pair, joined in matched(frame, metric):
        cells = [c for c in cell_columns(frame) if c in joined]
        rows = []
        for key, group in joined.groupby(cells, sort=True, dropna=False):
            stats = compare(group["ntp"], group["meap"], group["item_id"].to_numpy(), per_cell=True)
            cell = {c.removeprefix("cell."): v for c, v in zip(cells, key, strict=True)}
            rows.append({"pair": pair, "metric": metric, **cell, **stats})
        table = pd.DataFrame(rows).drop(columns=["n"])
        for name in (c.removeprefix("cell.") for c in cells):  # whole-number cell keys print as integers
            values = table[name]
            if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
                table[name] = values.astype("Int64")
        table["p_holm"] = holm(table["p_value"].to_numpy())
        parts.append(table)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
