"""records.jsonl + run.json -> summary.json, tables/ (CSV, Markdown, LaTeX), figures/ (PNG, PDF) and
index.html. Figure options and the headline metric can change here without running inference again."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from meap_bench.config import pairs_of
from meap_bench.errors import UserError
from meap_bench.faults import fault_point
from meap_bench.report.aggregate import (
    cell_columns,
    cell_means,
    checkpoint_summary,
    headline_metrics,
    load_frame,
    paired_cells,
    paired_differences,
)
from meap_bench.report.attention_maps import attention_report
from meap_bench.report.bars import bars_report
from meap_bench.report.curves import BASELINES, DOCUMENTS, position_report
from meap_bench.report.figures import heatmaps, significant_cells
from meap_bench.report.html import write_index
from meap_bench.report.spec import report_specs
from meap_bench.report.strata import headline_rows, strata_caption, strata_headline, strata_table
from meap_bench.report.style import DEFAULT_OPTIONS, FigureOptions
from meap_bench.report.tables import write_table
from meap_bench.report.validity import current_rows, skip_warnings, skipped_checkpoints
from meap_bench.report_spec import ReportSpec
from meap_bench.rundir import atomic_write_text, inside, read_run_json, run_checkpoints, safe_filename

OUTPUT_SUFFIXES = {".md", ".csv", ".tex", ".png", ".pdf"}
PAIRS_CAPTION = ("{task}: MEAP − NTP per pair and score on the samples both twins ran ({items} items, {n} samples); "
                 "95% interval by a seeded bootstrap over items (the resampling unit), p from an item-level "
                 "sign-flip permutation test.")
CELLS_CAPTION = ("{task}: MEAP − NTP per pair and cell; 95% interval by a bootstrap over the cell's items, p from "
                 "McNemar's exact test (0/1 scores) or a sign-flip permutation test, p_holm adjusted over the "
                 "pair's grid.")


def choose_metrics(run_dir: Path, frame: pd.DataFrame, headline: dict[str, str]) -> dict[str, str]:
    """The run's headline metric per task, or the one `report --set TASK.headline_metric=M` asks for (any score
    the records hold)."""
    metrics = headline_metrics(run_dir)
    for task, metric in headline.items():
        if task not in metrics:
            raise UserError(f"--set {task}.headline_metric: task '{task}' is not in this run "
                            f"({', '.join(metrics)})")
        rows = frame[frame["task"] == task]
        if f"score.{metric}" not in rows or rows[f"score.{metric}"].isna().all():
            held = sorted(c.removeprefix("score.") for c in rows if c.startswith("score.") and rows[c].notna().any())
            raise UserError(f"--set {task}.headline_metric={metric}: no such score in the records; choose one of "
                            f"{', '.join(held)}")
        metrics[task] = metric
    return metrics


def clear_outputs(run_dir: Path) -> None:
    """Remove the tables and figures of an earlier report, so none outlives the records it came from."""
    for folder in (run_dir / "tables", run_dir / "figures"):
        for path in folder.glob("*"):
            if path.suffix in OUTPUT_SUFFIXES:
                path.unlink()


def build_report(run_dir: Path, options: FigureOptions = DEFAULT_OPTIONS, headline: dict[str, str] | None = None
                 ) -> dict:
    """The report of a run directory; each task's figures and tables beyond the common ones are those its
    `ReportSpec` (in run.json) declares."""
    run = read_run_json(run_dir)
    specs = report_specs(run, run_dir)
    for folder in ("tables", "figures"):  # a link planted there must not carry the report elsewhere
        inside(run_dir, run_dir / folder)
    frame = load_frame(run_dir)
    if frame.empty:
        raise UserError(f"{run_dir}/records.jsonl holds no records yet; run the tasks first")
    for column in ("task", "checkpoint", "pair"):  # they become file names: an edited record must not make a path
        frame[column] = frame[column].map(lambda name: safe_filename(name) if isinstance(name, str) else name)
    fault_point("report")
    frame, warnings = current_rows(frame, run)
    if frame.empty:
        raise UserError(f"{run_dir}/records.jsonl holds no records of the weights run.json names; run the tasks "
                        f"again")
    clear_outputs(run_dir)
    all_pairs = pairs_of(run_checkpoints(run, run_dir))
    summary: dict = {"run": run_dir.name, "tasks": {}, "warnings": warnings}
    for task, metric in choose_metrics(run_dir, frame, headline or {}).items():
        spec = specs[task]
        rows = frame[frame["task"] == task]
        rows = rows.drop(columns=[c for c in rows if c.startswith(("cell.", "score.")) and rows[c].isna().all()])
        if rows.empty:
            continue
        ran = set(rows["checkpoint"])  # pair sections only where both members have records of this task
        pairs = {label: members for label, members in all_pairs.items() if set(members.values()) <= ran}
        skipped = skipped_checkpoints(rows)
        summary["warnings"] += skip_warnings(task, skipped)
        cells = cell_means(rows, metric)
        # headline summaries and pair statistics leave baseline cells (closed-book, oracle) out
        main = rows[~rows["cell.setting"].isin(BASELINES)] if "cell.setting" in rows else rows
        strata = None
        if spec.strata:  # the paper's average: acc_norm where a stratum has it, else acc; strata unweighted
            main, strata = headline_rows(main, metric, spec.strata), f"cell.{spec.strata.key}"
        per_checkpoint = checkpoint_summary(main, strata)
        scores = sorted(c.removeprefix("score.") for c in main.columns if c.startswith("score."))
        others = [m for m in scores if m != metric]
        paired = pd.concat([paired_differences(main, m, strata) for m in [metric, *others]], ignore_index=True)
        per_cell = [t for t in (paired_cells(rows, m) for m in [metric, *others]) if not t.empty]
        paired_per_cell = pd.concat(per_cell, ignore_index=True) if per_cell else pd.DataFrame()
        tables = run_dir / "tables"
        # the cells that exist (not every combination of their keys), a column per checkpoint; skipped: empty
        wide = cells.set_index([*cell_columns(rows), "checkpoint"])["mean"].unstack("checkpoint").reset_index()
        items = main[main["status"] == "ok"].groupby("checkpoint")["item_id"].nunique()
        write_table(wide, tables / f"{task}_cells", f"{task}: mean {metric} per cell and checkpoint (each cell "
                    f"asks the same {items.max() if len(items) else 0} items).")
        write_table(per_checkpoint, tables / f"{task}_summary",
                    f"{task}: mean of each score per checkpoint over the samples run "
                    f"({items.max() if len(items) else 0} distinct items); the best value of each score in bold.",
                    best=[c for c in per_checkpoint.columns if c not in ("checkpoint", "objective", "pair", "samples",
                                                                         "skipped", "items")])
        if not paired.empty:
            head = paired.iloc[0]
            write_table(paired, tables / f"{task}_pairs", PAIRS_CAPTION.format(task=task, items=head["n_items"],
                                                                                 n=head["n"]))
        if not paired_per_cell.empty:
            write_table(paired_per_cell, tables / f"{task}_pairs_cells", CELLS_CAPTION.format(task=task))
        if spec.heatmap:
            row, col = spec.heatmap.rows, spec.heatmap.columns
            heatmaps(cells, pairs, task, metric, row, col, run_dir / "figures", options,
                     significant_cells(paired_per_cell, metric, row, col), spec.heatmap.chance.get(metric),
                     line=True, labels=spec.axis_labels)
        summary["tasks"][task] = {
            "headline_metric": metric,
            "status": "all_skipped" if len(skipped) == len(ran) else "some_skipped" if skipped else "ok",
            "skipped_checkpoints": skipped,
            "headline": strata_headline(metric, spec.strata) if spec.strata else metric,
            "checkpoints": json.loads(per_checkpoint.to_json(orient="records")),
            "pairs": json.loads(paired.to_json(orient="records")),
            "pairs_cells": json.loads(paired_per_cell.to_json(orient="records")),
            "cells": json.loads(cells.to_json(orient="records")),
        }
        summary["tasks"][task].update(declared_outputs(spec, rows, cells, pairs, task, metric, run_dir, options,
                                                       paired_per_cell))
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    skipped_rows = frame[frame["status"] != "ok"]
    skipped_cells = (skipped_rows.groupby(["task", "checkpoint", "skip_reason"], dropna=False)
                     .agg(samples=("sample_id", "size"), cells=("sample_id", lambda s: s.str.rsplit("-", n=1)
                                                                .str[0].nunique())).reset_index()
                     if not skipped_rows.empty else pd.DataFrame())
    write_index(run_dir, summary, skipped_cells)
    return summary


def declared_outputs(spec: ReportSpec, rows: pd.DataFrame, cells: pd.DataFrame, pairs: dict[str, dict[str, str]],
                     task: str, metric: str, run_dir: Path, options: FigureOptions, paired_per_cell: pd.DataFrame
                     ) -> dict:
    """The figures and tables the task's spec adds to the common ones; what of them summary.json keeps."""
    found: dict = {}
    if spec.positions:  # curves, position x size heatmaps, tables averaged over positions
        found.update(position_report(rows, cells, pairs, task, metric, run_dir, write_table, spec.positions, options,
                                     paired_per_cell, spec.axis_labels))
    if spec.strata:  # per stratum every metric ± stderr, their average, MEAP-NTP per pair
        table, numbers = strata_table(rows, pairs, metric, spec.strata)
        write_table(table, run_dir / "tables" / f"{task}_tasks", strata_caption(metric, spec.strata))
        found.update(lm_eval=json.loads(numbers.to_json(orient="records")),
                     lm_eval_table=table.to_markdown(index=False, disable_numparse=True))
    if spec.attention:  # layer x head maps, target share heatmaps, the paper's quantities per pair
        found.update(attention_report(rows, pairs, run_dir, write_table, task, spec.attention, spec.axis_labels))
    if spec.bars:  # share judged per group with intervals, the judge named
        found.update(bars_report(rows, spec.bars, run_dir, write_table, task))
    return found


def pair_line(label: str, pair: dict) -> str:
    """One paired result: delta, its item-clustered 95% interval, p-value and what they rest on."""
    return (f"{label} = {pair['meap_minus_ntp']:+.3f}, 95% CI [{pair['ci95_low']:+.3f}, {pair['ci95_high']:+.3f}] "
            f"(bootstrap over {pair['resampled']}s), p = {pair['p_value']:.3g} ({pair['test']}), "
            f"n = {pair['n_items']} {pair['resampled']}s / {pair['n']} samples, {pair['n_discordant']} discordant "
            f"(MEAP better on {pair['meap_wins']}, NTP on {pair['ntp_wins']})")


def summary_table(summary: dict, specs: dict[str, ReportSpec]) -> str:
    """What a run prints at the end: per task, every score's mean per checkpoint, then MEAP-minus-NTP on
    the headline metric per pair (and, for position sweeps, per size and baseline), with its 95% interval
    resampling items, its p-value and the number of distinct items."""
    blocks = []
    for task, result in summary["tasks"].items():
        spec = specs.get(task, ReportSpec())
        metric = result["headline_metric"]
        table = pd.DataFrame(result["checkpoints"]).drop(columns=["pair"], errors="ignore")
        blocks.append(f"{task} (headline: {result.get('headline', metric)})\n"
                      f"{table.to_markdown(index=False, floatfmt='.3f')}")
        for pair in (p for p in result["pairs"] if p["metric"] == metric):
            lines = [pair_line(f"pair {pair['pair']}: MEAP - NTP {metric}", pair)]
            sweep = spec.positions
            for part in (p for p in result.get("pairs_averaged", []) if sweep and p["pair"] == pair["pair"]
                         and p["metric"] == metric):
                where = (f"{part[sweep.size]} {sweep.size_label}, avg over positions"
                         if part["setting"] == DOCUMENTS else part["setting"])
                lines.append(pair_line(f"  {where}", part))
            blocks.append("\n".join(lines))
        if result.get("lm_eval_table") and spec.strata:
            blocks.append(f"{task} ({spec.strata.source}):\n{result['lm_eval_table']}")
    return "\n\n".join(blocks)
