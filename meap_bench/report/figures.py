"""Heatmaps: one per checkpoint (with its accuracy-vs-length line beside it) and NTP | MEAP | MEAP-minus-NTP
per pair, where delta cells whose paired interval excludes 0 are outlined and starred."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from meap_bench.report.style import (
    DEFAULT_OPTIONS,
    DIVERGING,
    OBJECTIVE_LINES,
    PALETTE,
    SEQUENTIAL,
    WIDTHS,
    FigureOptions,
    metric_label,
    paper_style,
    plt,
    save,
)

DELTA_STEPS = (5, 10, 20, 25, 50, 100)  # the delta colour scale is the smallest of these covering the data


def grid(cells: pd.DataFrame, checkpoint: str, row: str, col: str
         ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(percent matrix, skipped mask, samples run) of one checkpoint's cells; rows and columns sorted."""
    mine = cells[cells["checkpoint"] == checkpoint]
    frames = [mine.pivot_table(index=row, columns=col, values=v, aggfunc="first", dropna=False)
              for v in ("mean", "skipped", "n_ok")]
    frames = [f.sort_index().sort_index(axis=1) for f in frames]
    for frame in frames:
        frame.index = [f"{v:g}" for v in frame.index]
        frame.columns = [f"{v:g}" for v in frame.columns]
    values, skipped, n = frames
    return values * 100, skipped.fillna(False).astype(bool), n.fillna(0).astype(int)


def delta_limit(delta: pd.DataFrame) -> int:
    """The colour scale of a difference map adapts to the data: a 5-point difference must not look white."""
    top = float(np.nanmax(np.abs(delta.to_numpy(dtype=float)))) if delta.notna().any().any() else 0.0
    return next((s for s in DELTA_STEPS if top <= s), 100)


def draw_grid(ax: plt.Axes, values: pd.DataFrame, skipped: pd.DataFrame, n: pd.DataFrame, *, diverging: bool,
              labels: tuple[str, str], cbar_label: str, marks: set[tuple[str, str]] = frozenset(),
              vmax: float = 100, fmt: str = ".0f") -> None:
    """One heatmap on 0..`vmax` (differences: a scale adapted to the data): annotated cells (with their n when
    it fits), hatched skipped cells, outlined marks."""
    ax.set_facecolor("#eeeeee")
    limit = delta_limit(values) if diverging else vmax
    image = ax.imshow(values.to_numpy(dtype=float), cmap=DIVERGING if diverging else SEQUENTIAL, aspect="auto",
                      vmin=-limit if diverging else 0, vmax=limit)
    rows, cols = values.shape
    width_in = ax.get_position().width * ax.figure.get_figwidth() / max(cols, 1)
    show_n = width_in >= 0.32 and n.to_numpy().max(initial=0) > 0
    norm = image.norm
    for i in range(rows):
        for j in range(cols):
            value = values.iat[i, j]
            if skipped.iat[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="////", edgecolor="#999999",
                                           lw=0))
                ax.text(j, i, "skipped", ha="center", va="center", fontsize=5, color="#444444")
                continue
            if np.isnan(value):
                continue
            mark = (values.index[i], values.columns[j]) in marks
            shade = image.cmap(norm(value))
            colour = "white" if (0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2]) < 0.5 else "black"
            text = format(value, f"+{fmt}" if diverging else fmt)
            text += "*" if mark else ""
            if show_n:
                text += f"\nn={n.iat[i, j]}"
            ax.text(j, i, text, ha="center", va="center", fontsize=5.5 if show_n else 6, color=colour,
                    linespacing=0.9)
            if mark:
                ax.add_patch(plt.Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="black", lw=0.9))
    ax.set_xticks(range(cols), values.columns)
    ax.set_yticks(range(rows), values.index)
    ax.set_ylabel(labels[0])
    ax.set_xlabel(labels[1])
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.06, pad=0.03)
    bar.set_label(cbar_label if not diverging else f"{cbar_label} (scale ±{limit})")
    bar.outline.set_linewidth(0.4)


def line_panel(ax: plt.Axes, cells: pd.DataFrame, checkpoints: list[str], col: str, objectives: dict[str, str],
               chance: float | None, xlabel: str) -> None:
    """Mean over the grid's rows vs the column key, one line per checkpoint (style by objective)."""
    for k, checkpoint in enumerate(checkpoints):
        mine = cells[(cells["checkpoint"] == checkpoint) & ~cells["skipped"]]
        line = mine.groupby(f"cell.{col}")["mean"].mean().sort_index() * 100
        style = OBJECTIVE_LINES.get(objectives.get(checkpoint, ""), {"ls": "-", "marker": "o"})
        ax.plot(line.index, line.to_numpy(), color=PALETTE[k % len(PALETTE)], label=checkpoint, **style)
    if chance is not None:
        ax.axhline(100 * chance, color="#777777", lw=0.8, ls=":", label="chance")
    ax.set_ylim(-3, 103)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def significant_cells(per_cell: pd.DataFrame, metric: str, row: str, col: str) -> dict[str, set[tuple[str, str]]]:
    """Per pair, the (row, column) labels of the cells whose paired 95% interval of `metric` excludes 0."""
    if per_cell.empty or row not in per_cell or col not in per_cell:
        return {}
    mine = per_cell[(per_cell["metric"] == metric) & ((per_cell["ci95_low"] > 0) | (per_cell["ci95_high"] < 0))]
    marks: dict[str, set[tuple[str, str]]] = {}
    for _, cell in mine.iterrows():
        marks.setdefault(cell["pair"], set()).add((f"{float(cell[row]):g}", f"{float(cell[col]):g}"))
    return marks


def heatmaps(cells: pd.DataFrame, pairs: dict[str, dict[str, str]], task: str, metric: str, row: str, col: str,
             out: Path, options: FigureOptions = DEFAULT_OPTIONS, marks: dict[str, set[tuple[str, str]]] | None = None,
             chance: float | None = None, line: bool = False, vmax: float = 100, fmt: str = ".0f",
             labels: dict[str, str] | None = None) -> list[Path]:
    """One heatmap per checkpoint (`line`: with its accuracy-vs-`col` line beside it); one NTP | MEAP |
    MEAP-minus-NTP figure per pair, delta cells in `marks[pair]` ((row, col) labels) outlined and starred.
    A smaller `vmax` spreads the colours over a metric that stays small, such as an attention share. `labels`
    names the cell keys on the axes (a key without one is shown as it is)."""
    scale = {"vmax": vmax, "fmt": fmt}
    axes_named = ((labels or {}).get(row, row), (labels or {}).get(col, col))
    row_c, col_c = f"cell.{row}", f"cell.{col}"
    width = WIDTHS[options.width]
    label = metric_label(metric)
    objectives = cells.groupby("checkpoint")["objective"].first().to_dict() if "objective" in cells else {}
    written: list[Path] = []
    with paper_style():
        for checkpoint in sorted(cells["checkpoint"].unique()):
            values, skipped, n = grid(cells, checkpoint, row_c, col_c)
            height = 0.6 + 0.22 * values.shape[0]
            if line:
                fig, axes = plt.subplots(1, 2, figsize=(width, height + 0.3), width_ratios=[1.5, 1],
                                         layout="constrained")
                draw_grid(axes[0], values, skipped, n, diverging=False, labels=axes_named, cbar_label="", **scale)
                line_panel(axes[1], cells, [checkpoint], col, objectives, chance, axes_named[1])
                axes[1].set_ylabel(label)
            else:
                fig, ax = plt.subplots(figsize=(min(width, 1.3 + 0.45 * values.shape[1]), height + 0.3),
                                       layout="constrained")
                draw_grid(ax, values, skipped, n, diverging=False, labels=axes_named, cbar_label=label, **scale)
            if options.titles:
                fig.suptitle(f"{checkpoint}: {task} {metric}")
            written += save(fig, out / f"{task}_heatmap_{checkpoint}")
        for pair, members in sorted(pairs.items()):
            ntp, meap = (grid(cells, members[o], row_c, col_c) for o in ("ntp", "meap"))
            stacked = options.width == "column"
            shape = (3, 1) if stacked else (1, 3)
            size = (width, 3 * (0.7 + 0.22 * ntp[0].shape[0])) if stacked else (width, 0.9 + 0.22 * ntp[0].shape[0])
            fig, axes = plt.subplots(*shape, figsize=size, layout="constrained", squeeze=False)
            axes = axes.ravel()
            draw_grid(axes[0], *ntp, diverging=False, labels=axes_named, cbar_label=f"NTP: {label}", **scale)
            draw_grid(axes[1], *meap, diverging=False, labels=axes_named, cbar_label=f"MEAP: {label}", **scale)
            delta = meap[0] - ntp[0]
            both = pd.DataFrame(np.minimum(ntp[2].to_numpy(), meap[2].to_numpy()), index=delta.index,
                                columns=delta.columns)
            draw_grid(axes[2], delta, ntp[1] | meap[1], both, diverging=True, labels=axes_named,
                      cbar_label="MEAP − NTP (points)", marks=(marks or {}).get(pair, set()), fmt=fmt)
            if options.titles:
                fig.suptitle(f"{task} {metric}, pair {pair} (* paired 95% interval excludes 0)")
            written += save(fig, out / f"{task}_pair_{pair}")
    return written
