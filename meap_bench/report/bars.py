"""Judged shares (a `Bars` spec): the share of outputs a judge found `metric` (faithful) per group (dataset) and
checkpoint with a 95% interval, the average over groups, unjudged counts, judge cost, and MEAP minus NTP per pair
(per group and averaged over groups, items resampled within their group). The judge, as the task names it (a
lexical proxy says so), heads every table and figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from meap_bench.report.aggregate import paired_cells, paired_differences  # noqa: E402
from meap_bench.report.curves import interval  # noqa: E402
from meap_bench.report.style import PALETTE, WIDTHS, paper_style, save  # noqa: E402
from meap_bench.report_spec import Bars  # noqa: E402

AVERAGE = "average"


def group_shares(rows: pd.DataFrame, spec: Bars) -> pd.DataFrame:
    """Per checkpoint and group: samples, judged, unjudged, share of `metric` with its Wilson 95% interval, judge
    tokens and cost; then per checkpoint the unweighted average over groups, its interval the average of the
    groups' bounds (conservative: it ignores that independent groups' errors partly cancel)."""
    metric, group_key = spec.metric, f"cell.{spec.group}"
    ok = rows[rows["status"] == "ok"]
    verdicts = ok["meta"].map(lambda m: m.get("verdict"))
    usd = ok["meta"].map(lambda m: m.get("judge_usd", 0.0))
    tokens = ok["meta"].map(lambda m: sum(m.get("judge_tokens", {}).values()))
    parts = []
    for (checkpoint, value), group in ok.groupby(["checkpoint", group_key], sort=True):
        scores = group[f"score.{metric}"] if f"score.{metric}" in group else pd.Series(dtype=float)
        judged = scores.dropna().to_numpy(dtype=float)  # no column at all when no output got a verdict
        low, high = interval(judged)
        parts.append({"checkpoint": checkpoint, "objective": group["objective"].iloc[0], spec.group: value,
                      "samples": len(group), "judged": len(judged),
                      "unjudged": int((verdicts[group.index] == "unjudged").sum()),
                      "skipped": int(((rows["checkpoint"] == checkpoint) & (rows[group_key] == value)
                                      & (rows["status"] != "ok")).sum()),
                      metric: judged.mean() if len(judged) else math.nan, "ci95_low": low, "ci95_high": high,
                      "judge_tokens": int(tokens[group.index].sum()), "judge_usd": float(usd[group.index].sum())})
    table = pd.DataFrame(parts)
    if table.empty:
        return table
    averages = []
    for checkpoint, group in table.groupby("checkpoint", sort=True):
        valid = group[group["judged"] > 0]
        averages.append({"checkpoint": checkpoint, "objective": group["objective"].iloc[0], spec.group: AVERAGE,
                         **{c: int(group[c].sum()) for c in ("samples", "judged", "unjudged", "skipped",
                                                             "judge_tokens")},
                         **{c: valid[c].mean() for c in (metric, "ci95_low", "ci95_high")},
                         "judge_usd": float(group["judge_usd"].sum())})
    return pd.concat([table, pd.DataFrame(averages)], ignore_index=True)


def pair_deltas(rows: pd.DataFrame, spec: Bars) -> pd.DataFrame:
    """MEAP minus NTP per pair: per group (McNemar's exact p) and averaged over groups (items resampled within
    their group, sign-flip p); only items both members' judges gave a verdict on."""
    per_group = paired_cells(rows, spec.metric)
    overall = paired_differences(rows, spec.metric, strata=f"cell.{spec.group}")
    if per_group.empty or overall.empty:
        return pd.DataFrame()
    overall = overall.assign(**{spec.group: AVERAGE}).drop(columns=["n"])
    columns = ["pair", spec.group, "ntp", "meap", "meap_minus_ntp", "ci95_low", "ci95_high", "p_value", "test",
               "n_items", "n_discordant"]
    return pd.concat([per_group, overall], ignore_index=True)[columns]


def bar_chart(shares: pd.DataFrame, spec: Bars, out: Path, name: str) -> list[Path]:
    """Share judged `metric` per group (and the average), one bar per checkpoint with its 95% interval; NTP
    bars hatched so objectives differ without colour."""
    datasets = [d for d in dict.fromkeys(shares[spec.group]) if d != AVERAGE] + [AVERAGE]
    checkpoints = sorted(shares["checkpoint"].unique())
    width = 0.8 / len(checkpoints)
    x = np.arange(len(datasets))
    with paper_style():
        fig, ax = plt.subplots(figsize=(WIDTHS["column"], 2.2), layout="constrained")
        for k, checkpoint in enumerate(checkpoints):
            mine = shares[shares["checkpoint"] == checkpoint].set_index(spec.group).reindex(datasets)
            mean = 100 * mine[spec.metric].to_numpy(dtype=float)
            # clipped: a Wilson bound may sit a rounding error inside a share of 0 or 1
            err = np.vstack([mean - 100 * mine["ci95_low"].to_numpy(dtype=float),
                             100 * mine["ci95_high"].to_numpy(dtype=float) - mean]).clip(min=0)
            objective = mine["objective"].dropna().iloc[0] if mine["objective"].notna().any() else ""
            where = x + (k - (len(checkpoints) - 1) / 2) * width
            ax.bar(where, np.nan_to_num(mean), width, yerr=np.nan_to_num(err),
                   color=PALETTE[k % len(PALETTE)], hatch="///" if objective == "ntp" else None, edgecolor="white",
                   linewidth=0.4, capsize=1.5, error_kw={"elinewidth": 0.6}, label=checkpoint)
            for spot, top, share, judged in zip(where, mean + err[1], mean, mine["judged"], strict=True):
                if judged == judged:  # the share over judged outputs, readable even for empty bars
                    ax.text(spot, np.nan_to_num(top) + 1.5, f"{share:.0f}%\nn={int(judged)}", ha="center",
                            va="bottom", fontsize=5)
        ax.set_xticks(x, datasets, rotation=20, ha="right")
        ax.axvline(len(datasets) - 1.5, color="grey", lw=0.5, ls=":")
        ax.set_ylim(0, 115)
        ax.set_ylabel(f"Judged {spec.metric} (%)\n{spec.judge}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(frameon=False, ncol=min(len(checkpoints), 3), loc="upper left")
    return save(fig, out / name)


def bars_report(rows: pd.DataFrame, spec: Bars, run_dir: Path, write_table, task: str) -> dict:
    """Tables and the bar chart of one task's judged records; returns what summary.json keeps."""
    shares = group_shares(rows, spec)
    if shares.empty:
        return {}
    shares.insert(0, "judge", spec.judge)
    deltas = pair_deltas(rows, spec)
    tables = run_dir / "tables"
    write_table(shares, tables / f"{task}_{spec.metric}")
    if not deltas.empty:
        deltas.insert(0, "judge", spec.judge)
        write_table(deltas, tables / f"{task}_pairs_by_{spec.group}")
    bar_chart(shares, spec, run_dir / "figures", f"{task}_{spec.metric}")
    return {"judge": spec.judge, spec.metric: json.loads(shares.to_json(orient="records")),
            f"pairs_by_{spec.group}": json.loads(deltas.to_json(orient="records")) if not deltas.empty else []}
