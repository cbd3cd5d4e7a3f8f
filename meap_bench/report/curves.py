"""Position sweeps (a `PositionSweep` spec): accuracy-vs-position curves with 95% bands, position x size heatmaps,
and tables per cell and averaged over positions (the paper's summary number).

Cells of these tasks carry `position` and the spec's size key; some also carry `setting`: `documents`, or the
baselines `closed_book` (drawn dashed) and `oracle` (drawn dotted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from meap_bench.report.aggregate import paired_differences  # noqa: E402
from meap_bench.report.figures import heatmaps, significant_cells  # noqa: E402
from meap_bench.report.style import (  # noqa: E402
    BASELINE_LINES,
    BASELINE_NAMES,
    DEFAULT_OPTIONS,
    OBJECTIVE_LINES,
    PALETTE,
    WIDTHS,
    FigureOptions,
    metric_label,
    paper_style,
    save,
)
from meap_bench.report_spec import PositionSweep  # noqa: E402

DOCUMENTS = "documents"
BASELINES = ("closed_book", "oracle")
Z95 = 1.959963984540054


def interval(values: np.ndarray) -> tuple[float, float]:
    """95% interval of a mean: Wilson for 0/1 scores, else mean +- 1.96 standard errors."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan)
    mean = float(values.mean())
    if np.isin(values, (0.0, 1.0)).all():
        denom = 1 + Z95**2 / n
        centre = (mean + Z95**2 / (2 * n)) / denom
        half = Z95 * math.sqrt(mean * (1 - mean) / n + Z95**2 / (4 * n * n)) / denom
        return (max(0.0, centre - half), min(1.0, centre + half))
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return (mean - half, mean + half)


def with_setting(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.copy()
    if "cell.setting" not in rows:
        rows["cell.setting"] = DOCUMENTS
    return rows


def position_cells(rows: pd.DataFrame, metric: str, size: str) -> pd.DataFrame:
    """Per checkpoint and cell: samples run and skipped, mean and 95% interval of `metric`."""
    column = f"score.{metric}"
    out = []
    keys = ["checkpoint", "cell.setting", f"cell.{size}", "cell.position"]
    for key, group in with_setting(rows).groupby(keys, sort=True):
        ok = group[group["status"] == "ok"]
        values = ok[column].dropna().to_numpy(dtype=float) if column in ok else np.array([])
        low, high = interval(values)
        out.append({"checkpoint": key[0], "objective": group["objective"].iloc[0], "setting": key[1],
                    size: int(key[2]), "position": int(key[3]), "n": len(values),
                    "skipped": int((group["status"] != "ok").sum()),
                    "mean": float(values.mean()) if len(values) else math.nan, "ci95_low": low, "ci95_high": high})
    return pd.DataFrame(out)


def averaged(per_cell: pd.DataFrame, sweep: PositionSweep) -> pd.DataFrame:
    """One row per checkpoint: the baselines and, per size, the mean over positions of the cell means
    (cells with no sample run are left out and counted)."""
    size, rows = sweep.size, []
    for checkpoint, mine in per_cell.groupby("checkpoint", sort=True):
        row: dict = {"checkpoint": checkpoint, "objective": mine["objective"].iloc[0]}
        for setting in BASELINES:
            cell = mine[mine["setting"] == setting]
            if not cell.empty:
                row[setting] = cell["mean"].iloc[0]
        docs = mine[mine["setting"] == DOCUMENTS]
        for n, cells in docs.groupby(size, sort=True):
            run = cells[cells["n"] > 0]
            row[f"{n} {sweep.size_label}: avg over positions"] = run["mean"].mean() if len(run) else math.nan
            row[f"{n}: positions run"] = f"{len(run)}/{len(cells)}"
        rows.append(row)
    return pd.DataFrame(rows)


def paired_by_size(rows: pd.DataFrame, metric: str, size: str) -> pd.DataFrame:
    """MEAP minus NTP per pair for each baseline and each size (averaged over positions: every sample
    of every position, matched by sample id), with the paired bootstrap interval."""
    rows = with_setting(rows)
    parts = []
    for (setting, n), subset in rows.groupby(["cell.setting", f"cell.{size}"], sort=True):
        paired = paired_differences(subset, metric)
        if not paired.empty:
            paired.insert(1, "setting", setting)
            paired.insert(2, size, int(n))
            parts.append(paired)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def curves(per_cell: pd.DataFrame, task: str, metric: str, sweep: PositionSweep, out: Path,
           options: FigureOptions = DEFAULT_OPTIONS) -> list[Path]:
    """The lost-in-the-middle figure: accuracy vs gold position, one panel per size, one line per checkpoint
    (line style and marker by objective, so NTP and MEAP differ without colour; lines nudged apart so that
    coinciding ones stay visible), closed-book and oracle baselines as thin horizontal lines in the
    checkpoint's colour, named in the legend."""
    size = sweep.size
    docs = per_cell[per_cell["setting"] == DOCUMENTS]
    sizes = sorted(docs[size].unique()) or [0]
    checkpoints = sorted(per_cell["checkpoint"].unique())
    objectives = per_cell.groupby("checkpoint")["objective"].first().to_dict()
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(checkpoints)}
    width = WIDTHS[options.width]
    columns = 1 if options.width == "column" and len(sizes) > 2 else len(sizes)
    rows = math.ceil(len(sizes) / columns)
    with paper_style():
        fig, axes = plt.subplots(rows, columns, figsize=(width, 1.9 * rows + 0.4), squeeze=False, sharey=True,
                                 layout="constrained")
        for ax, n in zip(axes.ravel(), sizes, strict=False):
            ticks = line_positions(docs, size, n)
            nudge = 0.012 * (max(ticks) - min(ticks) if len(ticks) > 1 else 1)
            for k, checkpoint in enumerate(checkpoints):
                colour = colours[checkpoint]
                line = docs[(docs["checkpoint"] == checkpoint) & (docs[size] == n)].sort_values("position")
                run = line[line["n"] > 0]
                x = run["position"] + (k - (len(checkpoints) - 1) / 2) * nudge
                style = OBJECTIVE_LINES.get(objectives.get(checkpoint, ""), {"ls": "-", "marker": "o"})
                if not run.empty:
                    ax.plot(x, 100 * run["mean"], color=colour, label=checkpoint, **style)
                    if options.bands:
                        ax.fill_between(x, 100 * run["ci95_low"], 100 * run["ci95_high"], color=colour, alpha=0.12,
                                        lw=0)
                for setting in BASELINES:
                    base = per_cell[(per_cell["checkpoint"] == checkpoint) & (per_cell["setting"] == setting)
                                    & (per_cell["n"] > 0)]
                    if not base.empty:  # nudged by under a point so equal baselines of two checkpoints both show
                        level = 100 * base["mean"].iloc[0] + (k - (len(checkpoints) - 1) / 2) * 0.9
                        ax.axhline(level, color=colour, ls=BASELINE_LINES[setting], lw=0.8,
                                   label=f"{checkpoint} {BASELINE_NAMES[setting]}")
            skipped = sorted(set(ticks) - set(docs[(docs[size] == n) & (docs["n"] > 0)]["position"]))
            note = f" (skipped: {', '.join(map(str, skipped))})" if skipped else ""
            ax.set_title(f"{n} {sweep.size_label}{note}")
            ax.set_xlabel(sweep.position_label)
            if ticks:
                ax.set_xticks(ticks)
            ax.set_ylim(-3, 103)
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(sizes):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel(metric_label(metric))
        legend: dict[str, object] = {}
        for ax in axes.ravel():
            for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(text, handle)
        labels = sorted(legend, key=lambda t: (t not in checkpoints, t))  # checkpoints first, then baselines
        handles = [legend[t] for t in labels]
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 2 if columns == 1 or
                                                                              options.width == "column" else 3),
                       frameon=False)
        if options.titles:
            fig.suptitle(f"{task}: {metric} by gold position" + (" (95% bands)" if options.bands else ""))
    return save(fig, out / f"{task}_curves")


def line_positions(docs: pd.DataFrame, size: str, n: int) -> list[int]:
    return sorted(int(p) for p in docs[docs[size] == n]["position"].unique())


def position_report(rows: pd.DataFrame, cells: pd.DataFrame, pairs: dict[str, dict[str, str]], task: str,
                    metric: str, run_dir: Path, write_table, sweep: PositionSweep,
                    options: FigureOptions = DEFAULT_OPTIONS, per_cell_pairs: pd.DataFrame | None = None,
                    labels: dict[str, str] | None = None) -> dict:
    """Curves, heatmaps (documents cells only) and tables of one position-sweep task; returns the
    averaged results for summary.json."""
    size = sweep.size
    per_cell = position_cells(rows, metric, size)
    figures, tables = run_dir / "figures", run_dir / "tables"
    curves(per_cell, task, metric, sweep, figures, options)
    if "cell.setting" in cells:
        doc_cells = cells[cells["cell.setting"] == DOCUMENTS]
    else:
        doc_cells = cells
    if not doc_cells.empty:
        marks = significant_cells(per_cell_pairs if per_cell_pairs is not None else pd.DataFrame(), metric,
                                  "position", size)
        heatmaps(doc_cells, pairs, task, metric, "position", size, figures, options, marks, labels=labels)
    by_size = averaged(per_cell, sweep)
    paired = paired_by_size(rows, metric, size)
    write_table(per_cell, tables / f"{task}_positions", f"{task}: mean {metric} per checkpoint and cell with its 95% "
                f"interval (Wilson for 0/1 scores) over the cell's items.")
    write_table(by_size, tables / f"{task}_averaged", f"{task}: mean {metric} averaged over gold positions per size, "
                f"and the closed-book and oracle baselines.", best=[c for c in by_size.columns if "avg" in c])
    if not paired.empty:
        write_table(paired, tables / f"{task}_pairs_averaged",
                    f"{task}: MEAP − NTP per pair, size and baseline, averaged over positions; 95% interval by a "
                    f"bootstrap over items, p from an item-level sign-flip permutation test.")
    return {"averaged": json.loads(by_size.to_json(orient="records")),
            "pairs_averaged": json.loads(paired.to_json(orient="records")) if not paired.empty else []}
