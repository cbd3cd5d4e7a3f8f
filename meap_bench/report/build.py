"""records.jsonl + run.json -> summary.json, tables/ (Markdown, CSV) and figures/ (PNG, PDF)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from meap_bench.config import Checkpoint, pairs_of
from meap_bench.errors import UserError
from meap_bench.report.aggregate import (
    cell_columns,
    cell_means,
    checkpoint_summary,
    headline_metrics,
    load_frame,
    paired_differences,
)
from meap_bench.report.attention import attention_report
from meap_bench.report.commonsense import commonsense_table
from meap_bench.report.curves import BASELINES, POSITION_TASKS, position_report
from meap_bench.report.figures import heatmaps

HEATMAP_AXES = {"needle": ("depth", "length")}  # task -> (row, column) cell keys


def write_table(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path.with_suffix(".csv"), index=False, float_format="%.4f")
    path.with_suffix(".md").write_text(frame.to_markdown(index=False, floatfmt=".4f") + "\n")


def build_report(run_dir: Path) -> dict:
    if not (run_dir / "run.json").is_file():
        raise UserError(f"{run_dir}: no run.json; give a run directory written by `run`")
    frame = load_frame(run_dir)
    if frame.empty:
        raise UserError(f"{run_dir}/records.jsonl holds no records yet; run the tasks first")
    run = json.loads((run_dir / "run.json").read_text())
    pairs = pairs_of([Checkpoint.model_validate(c) for c in run["checkpoints"]])
    summary: dict = {"run": run_dir.name, "tasks": {}}
    for task, metric in headline_metrics(run_dir).items():
        rows = frame[frame["task"] == task].dropna(axis=1, how="all")
        if rows.empty:
            continue
        cells = cell_means(rows, metric)
        # headline summaries and pair statistics leave baseline cells (closed-book, oracle) out
        main = rows[~rows["cell.setting"].isin(BASELINES)] if "cell.setting" in rows else rows
        per_checkpoint = checkpoint_summary(main)
        scores = sorted(c.removeprefix("score.") for c in main.columns if c.startswith("score."))
        others = [m for m in scores if m != metric]
        paired = pd.concat([paired_differences(main, m) for m in [metric, *others]], ignore_index=True)
        tables = run_dir / "tables"
        wide = cells.pivot_table(index=[c for c in cell_columns(rows)], columns="checkpoint", values="mean",
                                 dropna=False).reset_index()
        write_table(wide, tables / f"{task}_cells")
        write_table(per_checkpoint, tables / f"{task}_summary")
        if not paired.empty:
            write_table(paired, tables / f"{task}_pairs")
        if task in HEATMAP_AXES:
            heatmaps(cells, pairs, task, metric, *HEATMAP_AXES[task], run_dir / "figures")
        summary["tasks"][task] = {
            "headline_metric": metric,
            "checkpoints": json.loads(per_checkpoint.to_json(orient="records")),
            "pairs": json.loads(paired.to_json(orient="records")),
            "cells": json.loads(cells.to_json(orient="records")),
        }
        if task in POSITION_TASKS:  # curves, position x size heatmaps, tables averaged over positions
            summary["tasks"][task].update(position_report(rows, cells, pairs, task, metric, run_dir, write_table))
        if task == "commonsense":  # per lm-eval task acc/acc_norm ± stderr, their average, MEAP-NTP per pair
            table, numbers = commonsense_table(rows, pairs, metric)
            write_table(table, tables / "commonsense_tasks")
            markdown = table.to_markdown(index=False, disable_numparse=True)
            (tables / "commonsense_tasks.md").write_text(markdown + "\n")
            summary["tasks"][task].update(lm_eval=json.loads(numbers.to_json(orient="records")),
                                          lm_eval_table=markdown)
        if task == "attention":  # layer x head maps, target share heatmaps, the paper's quantities per pair
            summary["tasks"][task].update(attention_report(rows, pairs, run_dir, write_table))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def summary_table(summary: dict) -> str:
    """What a run prints at the end: per task, every score's mean per checkpoint, then MEAP-minus-NTP on
    the headline metric per pair with its paired-bootstrap 95% interval."""
    blocks = []
    for task, result in summary["tasks"].items():
        metric = result["headline_metric"]
        table = pd.DataFrame(result["checkpoints"]).drop(columns=["pair"], errors="ignore")
        blocks.append(f"{task} (headline: {metric})\n{table.to_markdown(index=False, floatfmt='.3f')}")
        for pair in (p for p in result["pairs"] if p["metric"] == metric):
            blocks.append(f"pair {pair['pair']}: MEAP - NTP {metric} = {pair['meap_minus_ntp']:+.3f} "
                          f"(95% CI [{pair['ci95_low']:+.3f}, {pair['ci95_high']:+.3f}], n={pair['n']}, "
                          f"MEAP better on {pair['meap_wins']}, NTP on {pair['ntp_wins']})")
        if result.get("lm_eval_table"):
            blocks.append(f"{task} (lm-eval):\n{result['lm_eval_table']}")
    return "\n\n".join(blocks)
