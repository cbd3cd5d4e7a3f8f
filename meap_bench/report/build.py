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
        per_checkpoint = checkpoint_summary(rows)
        paired = paired_differences(rows, metric)
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
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def summary_table(summary: dict) -> str:
    """The compact table printed at the end of a run: headline metric per task and checkpoint."""
    rows = []
    for task, result in summary["tasks"].items():
        metric = result["headline_metric"]
        for ckpt in result["checkpoints"]:
            rows.append({"task": task, "checkpoint": ckpt["checkpoint"], "objective": ckpt["objective"],
                         metric if len(summary["tasks"]) == 1 else "headline": ckpt.get(metric),
                         "samples": ckpt["samples"], "skipped": ckpt["skipped"]})
        for pair in result["pairs"]:
            rows.append({"task": task, "checkpoint": f"pair {pair['pair']}: MEAP-NTP",
                         "objective": f"95% CI [{pair['ci95_low']:+.3f}, {pair['ci95_high']:+.3f}]",
                         "headline" if len(summary["tasks"]) > 1 else metric: pair["meap_minus_ntp"],
                         "samples": pair["n"], "skipped": ""})
    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f")
