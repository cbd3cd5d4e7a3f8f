"""Records -> pandas: cell means, per-checkpoint summaries and paired MEAP-minus-NTP statistics."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from meap_bench.records import read_records

BOOTSTRAP_SEED = 0
BOOTSTRAP_ROUNDS = 2000


def load_frame(run_dir: Path) -> pd.DataFrame:
    """One row per record; `cell.*` and `score.*` columns flattened out of the dicts."""
    rows = []
    for record in read_records(run_dir / "records.jsonl"):
        row = asdict(record)
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


def checkpoint_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: samples, skipped samples and the mean of every score over the samples run."""
    scores = sorted(c for c in frame.columns if c.startswith("score."))
    ok = frame[frame["status"] == "ok"]
    summary = ok.groupby("checkpoint")[scores].mean() if scores else pd.DataFrame(index=[])
    summary.columns = [c.removeprefix("score.") for c in summary.columns]
    counts = frame.groupby("checkpoint")["status"].agg(
        samples=lambda s: int((s == "ok").sum()), skipped=lambda s: int((s != "ok").sum()))
    meta = frame.groupby("checkpoint")[["objective", "pair"]].first()
    return meta.join(counts).join(summary).reset_index()


def paired_differences(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """MEAP minus NTP on the samples both members ran (matched by sample id), with a seeded paired
    bootstrap 95% interval and win/loss counts."""
    column = f"score.{metric}"
    rows = []
    if column not in frame:
        return pd.DataFrame(rows)
    ok = frame[frame["status"] == "ok"]
    for pair, members in ok.groupby("pair"):
        by_objective = {obj: m.set_index("sample_id")[column] for obj, m in members.groupby("objective")}
        if set(by_objective) != {"ntp", "meap"}:
            continue
        joined = pd.concat({"ntp": by_objective["ntp"], "meap": by_objective["meap"]}, axis=1).dropna()
        diff = (joined["meap"] - joined["ntp"]).to_numpy()
        low, high = bootstrap_interval(diff)
        rows.append({"pair": pair, "metric": metric, "n": len(diff), "ntp": joined["ntp"].mean(),
                     "meap": joined["meap"].mean(), "meap_minus_ntp": diff.mean() if len(diff) else np.nan,
                     "ci95_low": low, "ci95_high": high, "meap_wins": int((diff > 0).sum()),
                     "ntp_wins": int((diff < 0).sum())})
    return pd.DataFrame(rows)


def bootstrap_interval(diff: np.ndarray) -> tuple[float, float]:
    if len(diff) == 0:
        return (np.nan, np.nan)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = diff[rng.integers(0, len(diff), size=(BOOTSTRAP_ROUNDS, len(diff)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
