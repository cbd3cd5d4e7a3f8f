"""Contextual hallucination: the share of outputs judged faithful per dataset and checkpoint with a 95% interval,
the average over datasets, unjudged counts, judge cost, and MEAP minus NTP per pair (per dataset and averaged over
datasets, items resampled within their dataset). The lexical judge is labelled a proxy in every table and figure."""

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

METRIC = "faithful"
AVERAGE = "average"


def judge_label(config: dict) -> str:
    """How the judge is named in tables and figures: the lexical one always as a proxy."""
    judge = config.get("judge", "lexical")
    if judge == "lexical":
        return "lexical proxy (not an LLM judge)"
    if judge == "openai":
        return f"{config.get('openai', {}).get('model', 'gpt-4o')} judge"
    return f"local judge {config.get('local', {}).get('checkpoint')}"


def dataset_shares(rows: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint and dataset: samples, judged, unjudged, faithful share with its Wilson 95% interval, judge
    tokens and cost; then per checkpoint the unweighted average over datasets, its interval the average of the
    datasets' bounds (conservative: it ignores that independent datasets' errors partly cancel)."""
    ok = rows[rows["status"] == "ok"]
    verdicts = ok["meta"].map(lambda m: m.get("verdict"))
    usd = ok["meta"].map(lambda m: m.get("judge_usd", 0.0))
    tokens = ok["meta"].map(lambda m: sum(m.get("judge_tokens", {}).values()))
    parts = []
    for (checkpoint, dataset), group in ok.groupby(["checkpoint", "cell.dataset"], sort=True):
        judged = group[f"score.{METRIC}"].dropna().to_numpy(dtype=float)
        low, high = interval(judged)
        parts.append({"checkpoint": checkpoint, "objective": group["objective"].iloc[0], "dataset": dataset,
                      "samples": len(group), "judged": len(judged),
                      "unjudged": int((verdicts[group.index] == "unjudged").sum()),
                      "skipped": int(((rows["checkpoint"] == checkpoint) & (rows["cell.dataset"] == dataset)
                                      & (rows["status"] != "ok")).sum()),
                      METRIC: judged.mean() if len(judged) else math.nan, "ci95_low": low, "ci95_high": high,
                      "judge_tokens": int(tokens[group.index].sum()), "judge_usd": float(usd[group.index].sum())})
    table = pd.DataFrame(parts)
    if table.empty:
        return table
    averages = []
    for checkpoint, group in table.groupby("checkpoint", sort=True):
        valid = group[group["judged"] > 0]
        averages.append({"checkpoint": checkpoint, "objective": group["objective"].iloc[0], "dataset": AVERAGE,
                         **{c: int(group[c].sum()) for c in ("samples", "judged", "unjudged", "skipped",
                                                             "judge_tokens")},
                         **{c: valid[c].mean() for c in (METRIC, "ci95_low", "ci95_high")},
                         "judge_usd": float(group["judge_usd"].sum())})
    return pd.concat([table, pd.DataFrame(averages)], ignore_index=True)


def pair_deltas(rows: pd.DataFrame) -> pd.DataFrame:
    """MEAP minus NTP per pair: per dataset (McNemar's exact p) and averaged over datasets (items resampled within
    their dataset, sign-flip p); only items both members' judges gave a verdict on."""
    per_dataset = paired_cells(rows, METRIC)
    overall = paired_differences(rows, METRIC, strata="cell.dataset")
    if per_dataset.empty or overall.empty:
        return pd.DataFrame()
    overall = overall.assign(dataset=AVERAGE).drop(columns=["n"])
    columns = ["pair", "dataset", "ntp", "meap", "meap_minus_ntp", "ci95_low", "ci95_high", "p_value", "test",
               "n_items", "n_discordant"]
    return pd.concat([per_dataset, overall], ignore_index=True)[columns]


def bar_chart(shares: pd.DataFrame, label: str, out: Path) -> list[Path]:
    """Share judged faithful per dataset (and the average), one bar per checkpoint with its 95% interval; NTP
    bars hatched so objectives differ without colour."""
    datasets = [d for d in dict.fromkeys(shares["dataset"]) if d != AVERAGE] + [AVERAGE]
    checkpoints = sorted(shares["checkpoint"].unique())
    width = 0.8 / len(checkpoints)
    x = np.arange(len(datasets))
    with paper_style():
        fig, ax = plt.subplots(figsize=(WIDTHS["column"], 2.2), layout="constrained")
        for k, checkpoint in enumerate(checkpoints):
            mine = shares[shares["checkpoint"] == checkpoint].set_index("dataset").reindex(datasets)
            mean = 100 * mine[METRIC].to_numpy(dtype=float)
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
        ax.set_ylabel(f"Judged faithful (%)\n{label}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(frameon=False, ncol=min(len(checkpoints), 3), loc="upper left")
    return save(fig, out / "hallucination_faithful")


def hallucination_report(rows: pd.DataFrame, config: dict, run_dir: Path, write_table) -> dict:
    """Tables and the bar chart of one run's hallucination records; returns what summary.json keeps."""
    label = judge_label(config)
    shares = dataset_shares(rows)
    if shares.empty:
        return {}
    shares.insert(0, "judge", label)
    deltas = pair_deltas(rows)
    tables = run_dir / "tables"
    write_table(shares, tables / "hallucination_faithful")
    if not deltas.empty:
        deltas.insert(0, "judge", label)
        write_table(deltas, tables / "hallucination_pairs_by_dataset")
    bar_chart(shares, label, run_dir / "figures")
    return {"judge": label, "faithful": json.loads(shares.to_json(orient="records")),
            "pairs_by_dataset": json.loads(deltas.to_json(orient="records")) if not deltas.empty else []}
