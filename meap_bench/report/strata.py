"""Scores of sub-tasks (a `Strata` spec: lm-eval tasks): per stratum every metric with its standard error for
every checkpoint, their average, and MEAP minus NTP per pair, all from the per-sample records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from meap_bench.report.aggregate import paired_differences
from meap_bench.report_spec import Strata


def strata_headline(metric: str, strata: Strata) -> str:
    """How the headline metric is averaged, as summary.json and the printed table name it."""
    return f"{metric} where a task reports it, else {strata.fallback}; unweighted mean over {strata.source} tasks"


def mean_stderr(values: pd.Series) -> float:
    """lm-eval's standard error of a mean: sample standard deviation (n - 1) over sqrt(n)."""
    values = values.dropna()
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def average_metric(per_task: pd.DataFrame, metric: str, fallback: str) -> pd.Series:
    """Per row, `metric` of each stratum where it reports one, else its `fallback` (BoolQ and WinoGrande have no
    acc_norm in lm-eval)."""
    tasks = list(per_task.columns.get_level_values(0).unique())
    picked = [per_task[(task, metric)].where(per_task[(task, metric)].notna(), per_task[(task, fallback)])
              if (task, metric) in per_task.columns else per_task[(task, fallback)] for task in tasks]
    return pd.concat(picked, axis=1).mean(axis=1, skipna=False)


def headline_rows(frame: pd.DataFrame, metric: str, strata: Strata) -> pd.DataFrame:
    """The records with `score.<metric>` as the paper averages it: the stratum's own metric where it reports one,
    else its fallback (BoolQ and WinoGrande have no acc_norm). Averaged with the strata column as strata, strata
    weigh the same whatever their size."""
    frame = frame.copy()
    column, fallback = f"score.{metric}", f"score.{strata.fallback}"
    frame[column] = frame[column].fillna(frame[fallback]) if column in frame else frame[fallback]
    return frame


def strata_long(frame: pd.DataFrame, strata: Strata) -> pd.DataFrame:
    """checkpoint x stratum x metric: mean, stderr, n."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for (checkpoint, task), group in ok.groupby(["checkpoint", f"cell.{strata.key}"], sort=True):
        for metric in strata.metrics:
            column = f"score.{metric}"
            if column not in group or group[column].isna().all():
                continue
            values = group[column].dropna()
            rows.append({"checkpoint": checkpoint, strata.key: task, "metric": metric,
                         "mean": float(values.mean()), "stderr": mean_stderr(values), "n": len(values)})
    return pd.DataFrame(rows)


def paired_stratum_differences(frame: pd.DataFrame, pairs: dict[str, dict[str, str]], strata: Strata
                               ) -> pd.DataFrame:
    """Per pair, stratum and metric: MEAP minus NTP over the documents both members ran."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for label, members in pairs.items():
        ntp, meap = (ok[ok["checkpoint"] == members[o]].set_index("sample_id") for o in ("ntp", "meap"))
        for metric in strata.metrics:
            column = f"score.{metric}"
            if column not in ok:
                continue
            joined = pd.concat({"ntp": ntp[column], "meap": meap[column], "task": ntp[f"cell.{strata.key}"]},
                               axis=1, join="inner").dropna()
            for task, group in joined.groupby("task", sort=True):
                diff = group["meap"] - group["ntp"]
                rows.append({"pair": label, strata.key: task, "metric": metric, "n": len(diff),
                             "meap_minus_ntp": float(diff.mean()), "stderr": mean_stderr(diff)})
    return pd.DataFrame(rows)


def strata_table(frame: pd.DataFrame, pairs: dict[str, dict[str, str]], metric: str, strata: Strata
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(wide table for display, long table of every number). The wide table has `mean ± stderr` per
    stratum and metric, the average over strata of `metric` (the fallback where a stratum lacks it), and one
    `pair X: MEAP-NTP` row per complete pair (paired difference ± its standard error; for the average,
    its 95% interval resampling documents within each stratum and the item-level sign-flip p)."""
    long = strata_long(frame, strata)
    if long.empty:
        return pd.DataFrame(), long
    means = long.pivot_table(index="checkpoint", columns=[strata.key, "metric"], values="mean")
    errors = long.pivot_table(index="checkpoint", columns=[strata.key, "metric"], values="stderr")
    average_name = f"average ({metric}, else {strata.fallback})"
    meta = frame.groupby("checkpoint")[["objective"]].first()
    wide = pd.DataFrame(index=means.index)
    wide["objective"] = meta["objective"]
    for task, name in means.columns:
        wide[f"{task} {name}"] = [f"{m:.4f} ± {e:.4f}" if not np.isnan(m) else "-"
                                  for m, e in zip(means[(task, name)], errors[(task, name)], strict=True)]
    average = average_metric(means, metric, strata.fallback)
    wide[average_name] = [f"{a:.4f}" for a in average]
    rows = wide.reset_index()
    diffs = paired_stratum_differences(frame, pairs, strata)
    averaged = {r["pair"]: r for r in paired_differences(headline_rows(frame, metric, strata), metric,
                                                         f"cell.{strata.key}").to_dict("records")}
    extra = []
    for label, group in (diffs.groupby("pair", sort=True) if not diffs.empty else []):
        row: dict = {"checkpoint": f"pair {label}: MEAP-NTP", "objective": ""}
        table = group.pivot_table(index="pair", columns=[strata.key, "metric"], values="meap_minus_ntp")
        spread = group.pivot_table(index="pair", columns=[strata.key, "metric"], values="stderr")
        for task, name in table.columns:  # the paired difference and its standard error
            row[f"{task} {name}"] = f"{table[(task, name)].iloc[0]:+.4f} ± {spread[(task, name)].iloc[0]:.4f}"
        pair = averaged[label]
        row[average_name] = (f"{pair['meap_minus_ntp']:+.4f}, 95% CI over documents "
                             f"[{pair['ci95_low']:+.4f}, {pair['ci95_high']:+.4f}], p={pair['p_value']:.3g}")
        extra.append(row)
    if extra:
        rows = pd.concat([rows, pd.DataFrame(extra)], ignore_index=True)
    if not diffs.empty:
        pair_rows = diffs.rename(columns={"meap_minus_ntp": "mean"})
        pair_rows.insert(0, "checkpoint", "pair " + pair_rows.pop("pair") + ": MEAP-NTP")
        long = pd.concat([long, pair_rows], ignore_index=True)
    return rows.fillna("-"), long


def strata_caption(metric: str, strata: Strata) -> str:
    return (f"{strata.source}: {' and '.join(strata.metrics)} ± standard error per task; the average is the "
            f"unweighted mean over tasks of {metric} where a task has it, else {strata.fallback}.")
