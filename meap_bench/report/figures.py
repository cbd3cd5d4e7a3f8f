"""Figures: NIAH-style heatmaps per checkpoint and NTP | MEAP | MEAP-minus-NTP per pair."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402

NIAH_COLOURS = LinearSegmentedColormap.from_list("niah", ["#F0496E", "#EBB839", "#0CD79F"])


def save(fig: plt.Figure, path: Path) -> list[Path]:
    """PNG and PDF, without timestamps, so regenerated figures are byte-stable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return [path.with_suffix(".png"), path.with_suffix(".pdf")]


def grid(cells: pd.DataFrame, checkpoint: str, row: str, col: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(percent matrix, skipped mask) of one checkpoint's cells; rows and columns sorted."""
    mine = cells[cells["checkpoint"] == checkpoint]
    values = mine.pivot_table(index=row, columns=col, values="mean", aggfunc="first", dropna=False) * 100
    skipped = mine.pivot_table(index=row, columns=col, values="skipped", aggfunc="first", dropna=False)
    values, skipped = values.sort_index().sort_index(axis=1), skipped.sort_index().sort_index(axis=1)
    for frame in (values, skipped):
        frame.index = [f"{v:g}" for v in frame.index]
        frame.columns = [f"{v:g}" for v in frame.columns]
    return values, skipped.fillna(False).astype(bool)


def draw_grid(ax: plt.Axes, values: pd.DataFrame, skipped: pd.DataFrame, diverging: bool, title: str,
              labels: tuple[str, str], vmax: float = 100, fmt: str = ".0f") -> None:
    """Percent values on a 0..vmax scale (differences: -vmax..vmax), skipped cells hatched."""
    ax.set_facecolor("#dddddd")
    cmap = "RdBu" if diverging else NIAH_COLOURS
    limits = dict(vmin=-vmax, vmax=vmax, center=0) if diverging else dict(vmin=0, vmax=vmax)
    sns.heatmap(values, ax=ax, cmap=cmap, annot=True, fmt=fmt, cbar=True, linewidths=0.5,
                linecolor="white", mask=values.isna(), **limits)
    for (i, j), is_skipped in np.ndenumerate(skipped.to_numpy(dtype=bool)):
        if is_skipped:
            ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, hatch="///", edgecolor="#888888", lw=0))
            ax.text(j + 0.5, i + 0.5, "skipped", ha="center", va="center", fontsize=7, color="#444444")
    ax.set_title(title)
    ax.set_ylabel(labels[0])
    ax.set_xlabel(labels[1])


def heatmaps(cells: pd.DataFrame, pairs: dict[str, dict[str, str]], task: str, metric: str, row: str,
             col: str, out: Path, vmax: float = 100, fmt: str = ".0f") -> list[Path]:
    """One heatmap per checkpoint; one NTP | MEAP | difference figure per pair (percent of `metric`; a
    smaller `vmax` spreads the colours over a metric that stays small, such as an attention share)."""
    row_c, col_c = f"cell.{row}", f"cell.{col}"
    written: list[Path] = []
    for checkpoint in sorted(cells["checkpoint"].unique()):
        values, skipped = grid(cells, checkpoint, row_c, col_c)
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * values.shape[1], 1 + 0.45 * values.shape[0]))
        draw_grid(ax, values, skipped, False, f"{checkpoint}: {task} {metric} (%)", (row, col), vmax, fmt)
        written += save(fig, out / f"{task}_heatmap_{checkpoint}")
    for label, members in sorted(pairs.items()):
        ntp, meap = (grid(cells, members[o], row_c, col_c) for o in ("ntp", "meap"))
        fig, axes = plt.subplots(1, 3, figsize=(3 * (1.8 + 0.9 * ntp[0].shape[1]), 1.5 + 0.45 * ntp[0].shape[0]),
                                 layout="constrained")
        draw_grid(axes[0], *ntp, False, f"NTP ({members['ntp']})", (row, col), vmax, fmt)
        draw_grid(axes[1], *meap, False, f"MEAP ({members['meap']})", (row, col), vmax, fmt)
        draw_grid(axes[2], meap[0] - ntp[0], ntp[1] | meap[1], True, "MEAP - NTP (points)", (row, col), vmax, fmt)
        fig.suptitle(f"{task} {metric}, pair {label}")
        written += save(fig, out / f"{task}_pair_{label}")
    return written
