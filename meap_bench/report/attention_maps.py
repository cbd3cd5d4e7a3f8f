"""Attention summaries (an `AttentionMaps` spec): layer x head maps of the attention on the target (a needle,
a gold document), per value of the spec's split key the target share over that value's two cell keys, MEAP - NTP
per pair with paired 95% intervals, and the table of the paper's quantities. Baseline cells (an oracle setting)
are left out of the pair statistics, as everywhere in the report."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from meap_bench.report.aggregate import cell_means, paired_differences  # noqa: E402
from meap_bench.report.curves import BASELINES, DOCUMENTS  # noqa: E402
from meap_bench.report.figures import heatmaps  # noqa: E402
from meap_bench.report.style import SEQUENTIAL, save  # noqa: E402
from meap_bench.report_spec import AttentionMaps  # noqa: E402

QUANTITIES = {  # score -> (label, factor): the paper's analysis and its companions
    "target_mass": ("answer-span share (%)", 100),
    "target_mass_max": ("answer-span share, top head (%)", 100),
    "target_ratio": ("answer-span attention per token / context average", 1),
    "distractor_mass": ("share on the rest of the context (%)", 100),
    "question_mass": ("share on the question (%)", 100),
    "entropy": ("attention entropy (nats)", 1),
}
CELL_SCORES = ["target_mass", "target_ratio", "target_mass_max", "distractor_mass", "question_mass", "entropy"]


def attention_report(rows: pd.DataFrame, pairs: dict[str, dict[str, str]], run_dir: Path,
                     write_table: Callable[[pd.DataFrame, Path], None], task: str, spec: AttentionMaps,
                     labels: dict[str, str]) -> dict:
    """Figures and tables of one task's attention summaries; returns the paper table for summary.json."""
    figures, tables = run_dir / "figures", run_dir / "tables"
    split = f"cell.{spec.split}"
    main = rows[~rows["cell.setting"].isin(BASELINES)] if "cell.setting" in rows else rows
    sources = [s for s in spec.axes if (rows[split] == s).any()]
    for source in sources:
        mine = rows[rows[split] == source].dropna(axis=1, how="all")
        write_table(source_cells(mine, split), tables / f"{task}_{source}_cells")
        grid = mine[mine["cell.setting"] == DOCUMENTS] if "cell.setting" in mine else mine
        cells = cell_means(grid, "target_mass")
        row, col = spec.axes[source]
        heatmaps(cells, pairs, f"{task}_{source}", "target_mass", row, col, figures,
                 vmax=nice_limit(100 * cells["mean"].max()), fmt=".1f", labels=labels)
    maps = layer_head_means(main, split, sources)
    layer_head_figures(maps, pairs, figures, task)
    paper = paper_table(main, split, sources)
    if not paper.empty:
        write_table(paper, tables / f"{task}_paper")
        for label in sorted(pairs):
            forest(paper[paper["pair"] == label], label, figures, task)
    return {"paper": json.loads(paper.to_json(orient="records"))}


def nice_limit(value: float) -> float:
    """A round colour-scale top just above `value` (percent): 1, 2, ... 10, then tens."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    return float(math.ceil(value)) if value < 10 else float(math.ceil(value / 10) * 10)


def source_cells(rows: pd.DataFrame, split: str) -> pd.DataFrame:
    """Per checkpoint and cell: prompts run and skipped, and the mean of each attention score."""
    keys = ["checkpoint", *sorted(c for c in rows.columns if c.startswith("cell.") and c != split)]
    scores = [f"score.{s}" for s in CELL_SCORES if f"score.{s}" in rows]
    grouped = rows.groupby(keys, sort=True)
    out = grouped.agg(n=("status", lambda s: int((s == "ok").sum())),
                      skipped=("status", lambda s: int((s != "ok").sum())))
    out = out.join(grouped[scores].mean()) if scores else out
    out.columns = [c.removeprefix("score.") for c in out.columns]
    out = out.reset_index().rename(columns=lambda c: c.removeprefix("cell."))
    for column in keys[1:]:  # whole-number cell keys print as such (other sources' rows made them float)
        name = column.removeprefix("cell.")
        if pd.api.types.is_float_dtype(out[name]) and (out[name] % 1 == 0).all():
            out[name] = out[name].astype(int)
    return out


def layer_head_means(rows: pd.DataFrame, split: str, sources: list[str]) -> dict[tuple[str, str], np.ndarray]:
    """(checkpoint, source) -> mean [layer, head] attention share on the target, over the prompts run."""
    ok = rows[rows["status"] == "ok"]
    maps = {}
    for (checkpoint, source), group in ok.groupby(["checkpoint", split], sort=True):
        if source in sources:
            maps[(checkpoint, source)] = np.mean([m["layer_head"]["target"] for m in group["meta"]], axis=0)
    return maps


def draw_layer_head(ax: plt.Axes, values: np.ndarray, title: str, vmax: float, diverging: bool = False) -> None:
    frame = pd.DataFrame(100 * values, index=range(values.shape[0]), columns=range(values.shape[1]))
    limits = dict(vmin=-vmax, vmax=vmax, center=0, cmap="RdBu") if diverging else \
        dict(vmin=0, vmax=vmax, cmap=SEQUENTIAL)
    sns.heatmap(frame, ax=ax, annot=values.size <= 64, fmt=".1f", cbar=True, linewidths=0.3, linecolor="white",
                **limits)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")


def layer_head_figures(maps: dict[tuple[str, str], np.ndarray], pairs: dict[str, dict[str, str]],
                       out: Path, task: str) -> list[Path]:
    """Per checkpoint: one layer x head map per source; per pair: NTP | MEAP | MEAP - NTP per source."""
    written: list[Path] = []
    if not maps:
        return written
    vmax = nice_limit(100 * max(float(m.max()) for m in maps.values()))
    for checkpoint in sorted({c for c, _ in maps}):
        mine = [(s, m) for (c, s), m in sorted(maps.items()) if c == checkpoint]
        layers, heads = mine[0][1].shape
        fig, axes = plt.subplots(1, len(mine), figsize=(len(mine) * (2.5 + 0.5 * heads), 1.5 + 0.35 * layers),
                                 squeeze=False, layout="constrained")
        for ax, (source, values) in zip(axes[0], mine, strict=True):
            draw_layer_head(ax, values, f"{source}", vmax)
        fig.suptitle(f"{checkpoint}: attention share on the target (%) from the answer-generating position")
        written += save(fig, out / f"{task}_layer_head_{checkpoint}")
    for label, members in sorted(pairs.items()):
        sources = sorted(s for c, s in maps if c == members["ntp"] and (members["meap"], s) in maps)
        if not sources:
            continue
        layers, heads = maps[(members["ntp"], sources[0])].shape
        size = (3 * (2.5 + 0.5 * heads), len(sources) * (1.3 + 0.35 * layers))
        fig, axes = plt.subplots(len(sources), 3, figsize=size, squeeze=False, layout="constrained")
        for row, source in enumerate(sources):
            ntp, meap = maps[(members["ntp"], source)], maps[(members["meap"], source)]
            draw_layer_head(axes[row][0], ntp, f"{source}: NTP ({members['ntp']})", vmax)
            draw_layer_head(axes[row][1], meap, f"{source}: MEAP ({members['meap']})", vmax)
            draw_layer_head(axes[row][2], meap - ntp, f"{source}: MEAP - NTP (points)", vmax / 2, diverging=True)
        fig.suptitle(f"attention share on the target (%), pair {label}")
        written += save(fig, out / f"{task}_layer_head_pair_{label}")
    return written


def paper_table(rows: pd.DataFrame, split: str, sources: list[str]) -> pd.DataFrame:
    """Per pair, source and quantity: NTP, MEAP, MEAP - NTP with its paired 95% interval, relative change."""
    parts = []
    for source in sources:
        mine = rows[rows[split] == source]
        for score, (label, factor) in QUANTITIES.items():
            paired = paired_differences(mine, score)
            if paired.empty:
                continue
            paired = paired.assign(source=source, quantity=label)
            for column in ("ntp", "meap", "meap_minus_ntp", "ci95_low", "ci95_high"):
                paired[column] = paired[column] * factor
            paired["relative_change_pct"] = 100 * paired["meap_minus_ntp"] / paired["ntp"].abs()
            parts.append(paired)
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    return table[["pair", "source", "quantity", "n", "ntp", "meap", "meap_minus_ntp", "ci95_low", "ci95_high",
                  "relative_change_pct"]]


def forest(paper: pd.DataFrame, label: str, out: Path, task: str) -> list[Path]:
    """One panel per quantity: MEAP - NTP per source with its paired 95% interval."""
    quantities = list(dict.fromkeys(paper["quantity"]))
    columns = 3
    rows = math.ceil(len(quantities) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, rows * (1.2 + 0.4 * paper["source"].nunique())),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(quantities):]:
        ax.set_visible(False)
    for ax, quantity in zip(axes.flat, quantities, strict=False):
        mine = paper[paper["quantity"] == quantity].reset_index(drop=True)
        ax.errorbar(mine["meap_minus_ntp"], mine.index, fmt="o", color="#333333", capsize=3,
                    xerr=[mine["meap_minus_ntp"] - mine["ci95_low"], mine["ci95_high"] - mine["meap_minus_ntp"]])
        ax.axvline(0, color="#999999", lw=1)
        ax.set_yticks(mine.index, mine["source"])
        ax.set_ylim(-0.6, len(mine) - 0.4)
        ax.set_title(quantity, fontsize=9)
        ax.set_xlabel("MEAP - NTP" + (" (points)" if "(%)" in quantity else ""), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"pair {label}: MEAP - NTP with paired 95% intervals")
    return save(fig, out / f"{task}_pair_{label}")
