"""CI regression gate. `baseline save` freezes a run's headline numbers per checkpoint, task and cell, item by
item; `check` compares a run with such a baseline (or a candidate checkpoint with a reference checkpoint of one
run) and fails when a metric drops by more than its rule's tolerance *and* the drop is significant at the item
level (one-sided paired sign-flip test over the items both sides ran).

Exit codes: 0 no regression, 1 regression, 2 unusable input (raised as UserError)."""

from __future__ import annotations

import fnmatch
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
from pydantic import Field

from meap_bench.config import Strict, read_yaml, validate
from meap_bench.errors import UserError
from meap_bench.report.aggregate import headline_metrics, load_frame
from meap_bench.report.merge import differing_keys
from meap_bench.report.stats import Clusters, sign_flip_p
from meap_bench.report.validity import current_rows

BASELINE_FORMAT = 1
ALL_CELLS = "all"
BASELINE_SETTINGS = ("closed_book", "oracle")  # mdqa reference cells: reported, never part of "all"


class Rule(Strict):
    """Tolerance for the (task, metric, cell) entries its glob patterns match; the last matching rule wins."""

    task: str = "*"
    metric: str = "*"
    cell: str = ALL_CELLS
    tolerance: float = Field(default=0.02, ge=0)


class Rules(Strict):
    alpha: float = Field(default=0.05, gt=0, lt=1)  # one-sided significance level of a drop
    checkpoints: list[str] | None = None  # checkpoints to gate (default: every one compared)
    rules: list[Rule] = Field(default_factory=lambda: [Rule()])

    def tolerance(self, task: str, metric: str, cell: str) -> float | None:
        """The tolerance of the last rule matching this entry, or None when no rule gates it."""
        found = None
        for rule in self.rules:
            if all(fnmatch.fnmatchcase(v, p) for v, p in ((task, rule.task), (metric, rule.metric), (cell, rule.cell))):
                found = rule.tolerance
        return found


def load_rules(path: Path | None) -> Rules:
    if path is None:
        return Rules()
    data = read_yaml(path)
    return validate(Rules, data if data is not None else {}, str(path), "rules")


def cell_label(row: pd.Series, cell_columns: list[str]) -> str:
    return " ".join(f"{c.removeprefix('cell.')}={row[c]:g}" if isinstance(row[c], float) else
                    f"{c.removeprefix('cell.')}={row[c]}" for c in cell_columns if pd.notna(row[c]))


def item_table(frame: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """Per checkpoint, cell label and item: the mean of `metric` over the item's samples run. The `all` cell
    averages every cell but the mdqa baselines, item by item."""
    rows = frame[(frame["task"] == task) & (frame["status"] == "ok")]
    column = f"score.{metric}"
    if rows.empty or column not in rows or rows[column].isna().all():
        raise UserError(f"metric '{metric}' of task '{task}' is absent from the run's records; re-run the task "
                        f"or gate another metric")
    rows = rows[rows[column].notna()]
    cells = sorted(c for c in rows.columns if c.startswith("cell.") and rows[c].notna().any())
    labelled = rows.assign(cell=rows.apply(cell_label, axis=1, args=(cells,)))
    per_cell = labelled.groupby(["checkpoint", "cell", "item_id"])[column].mean()
    main = labelled[~labelled["cell.setting"].isin(BASELINE_SETTINGS)] if "cell.setting" in labelled else labelled
    overall = main.groupby(["checkpoint", "item_id"])[column].mean()
    overall.index = pd.MultiIndex.from_tuples([(c, ALL_CELLS, i) for c, i in overall.index],
                                              names=["checkpoint", "cell", "item_id"])
    return pd.concat([overall, per_cell]).rename("value").reset_index()


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    if not (run_dir / "run.json").is_file():
        raise UserError(f"{run_dir}: no run.json; give a run directory written by `meap-bench run`")
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{run_dir}/run.json: not valid JSON; restore it from the run") from None
    frame = load_frame(run_dir)
    if frame.empty:
        raise UserError(f"{run_dir}/records.jsonl holds no records; run the tasks first")
    return run, current_rows(frame, run)[0]  # only the weights and backend run.json names now


def save_baseline(run_dir: Path, out: Path) -> dict:
    """Headline metric of every task: per checkpoint and cell, mean, n items and the item means."""
    run, frame = read_run(run_dir)
    metrics = headline_metrics(run_dir)
    entries = []
    for task, metric in metrics.items():
        if (frame["task"] == task).any():
            for (checkpoint, cell), group in item_table(frame, task, metric).groupby(["checkpoint", "cell"]):
                items = dict(zip(group["item_id"], group["value"].round(6), strict=True))
                entries.append({"checkpoint": checkpoint, "task": task, "metric": metric, "cell": cell,
                                "mean": round(float(group["value"].mean()), 6), "n_items": len(items),
                                "items": items})
    baseline = {"format": BASELINE_FORMAT, "run": run.get("run"), "backend": run.get("backend"),
                "tasks": {t: run["tasks"][t] for t in metrics}, "fingerprints": run.get("fingerprints", {}),
                "entries": entries}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(baseline, indent=1, sort_keys=True) + "\n")
    return baseline


def load_baseline(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"--baseline {path}: file not found; make one with `meap-bench baseline save RUN_DIR "
                        f"--out {path}`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"--baseline {path}: not valid JSON; make it again with `meap-bench baseline save`") from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT or not isinstance(data.get("entries"), list):
        raise UserError(f"--baseline {path}: not a meap-bench baseline (format {BASELINE_FORMAT}); make it again "
                        f"with `meap-bench baseline save`")
    return data


@dataclass
class Comparison:
    candidate: str
    reference: str
    task: str
    metric: str
    cell: str
    reference_mean: float
    candidate_mean: float
    drop: float
    tolerance: float
    p_value: float
    n_items: int
    regressed: bool


def compare(candidate: pd.Series, reference: pd.Series, rules: Rules, names: tuple[str, str],
            key: tuple[str, str, str]) -> Comparison | None:
    """One gated entry: item means of both sides, paired on the items both ran."""
    tolerance = rules.tolerance(*key)
    joined = pd.concat({"c": candidate, "r": reference}, axis=1, join="inner").dropna()
    if tolerance is None or joined.empty:
        return None
    diffs = (joined["r"] - joined["c"]).to_numpy()
    drop = float(diffs.mean())
    p = sign_flip_p(diffs, Clusters.of(np.arange(len(diffs))), alternative="greater")  # one value per item
    return Comparison(names[0], names[1], *key, float(joined["r"].mean()), float(joined["c"].mean()), drop,
                      tolerance, p, len(joined), drop > tolerance and p < rules.alpha)


def check(run_dir: Path, baseline_path: Path | None, rules: Rules, candidate: str | None = None,
          reference: str | None = None) -> list[Comparison]:
    run, frame = read_run(run_dir)
    metrics = headline_metrics(run_dir)
    if baseline_path is not None:
        baseline = load_baseline(baseline_path)
        for task, config in baseline["tasks"].items():
            if task not in run["tasks"]:
                raise UserError(f"{run_dir}: task '{task}' of the baseline was not run; run it with the same config")
            diff = differing_keys(config, run["tasks"][task], task)
            if diff:
                raise UserError(f"{run_dir}: {task} config differs from the baseline in {', '.join(diff)}; "
                                f"run with the baseline's config or save a new baseline")
        ref_items = pd.DataFrame([{**{k: e[k] for k in ("checkpoint", "task", "metric", "cell")}, "item_id": i,
                                   "value": v} for e in baseline["entries"] for i, v in e["items"].items()])
        tasks = {t: m for t, m in metrics.items() if t in baseline["tasks"]}
    else:
        if not (candidate and reference):
            raise UserError("check: give --baseline FILE, or --candidate NAME and --reference NAME of one run")
        ref_items, tasks = None, metrics
    known = set(frame["checkpoint"])
    results: list[Comparison] = []
    for task, metric in tasks.items():
        mine = item_table(frame, task, metric)
        theirs = mine if ref_items is None else ref_items[(ref_items["task"] == task)]
        if ref_items is not None and not (theirs["metric"] == metric).any():
            raise UserError(f"--baseline: no '{metric}' entries for task '{task}'; save the baseline again")
        for cand, ref in checkpoint_pairs(known, set(theirs["checkpoint"]), rules, candidate, reference, run_dir):
            for cell in sorted(set(mine[mine["checkpoint"] == cand]["cell"])):
                side = [t[(t["checkpoint"] == name) & (t["cell"] == cell)].set_index("item_id")["value"]
                        for t, name in ((mine, cand), (theirs, ref))]
                found = compare(side[0], side[1], rules, (cand, ref), (task, metric, cell))
                if found is not None:
                    results.append(found)
    return results


def checkpoint_pairs(run_names: set[str], reference_names: set[str], rules: Rules, candidate: str | None,
                     reference: str | None, run_dir: Path) -> list[tuple[str, str]]:
    """(candidate in the run, reference) pairs to compare."""
    if candidate or reference:
        cand = candidate or reference
        ref = reference or candidate
        for name, pool, where in ((cand, run_names, str(run_dir)), (ref, reference_names, "the reference")):
            if name not in pool:
                raise UserError(f"checkpoint '{name}' is not in {where}; known: {', '.join(sorted(pool))}")
        return [(cand, ref)]  # type: ignore[list-item]
    common = sorted(run_names & reference_names)
    gated = [c for c in common if rules.checkpoints is None or c in rules.checkpoints]
    if not gated:
        raise UserError(f"no checkpoint to gate: the run has {', '.join(sorted(run_names))}, the baseline "
                        f"{', '.join(sorted(reference_names))}; pass --candidate NAME --reference NAME")
    return [(c, c) for c in gated]


def markdown(results: list[Comparison], alpha: float) -> str:
    regressed = [r for r in results if r.regressed]
    head = (f"### meap-bench gate: {'REGRESSION' if regressed else 'no regression'} "
            f"({len(regressed)} of {len(results)} gated metrics; one-sided item-level test, alpha {alpha:g})\n\n")
    lines = ["| candidate | reference | task | metric | cell | reference | candidate | drop | tolerance | "
             "p (one-sided) | n items | verdict |", "|" + "---|" * 12]
    for r in results:
        verdict = "**regressed**" if r.regressed else "ok"
        lines.append(f"| {r.candidate} | {r.reference} | {r.task} | {r.metric} | {r.cell} | {r.reference_mean:.3f} "
                     f"| {r.candidate_mean:.3f} | {r.drop:+.3f} | {r.tolerance:.3f} | {format_p(r.p_value)} "
                     f"| {r.n_items} | {verdict} |")
    return head + "\n".join(lines) + "\n"


def format_p(p: float) -> str:
    return "-" if math.isnan(p) else (f"{p:.3g}" if p >= 1e-4 else "<1e-4")


def junit(results: list[Comparison], path: Path) -> None:
    suite = ElementTree.Element("testsuite", name="meap-bench-gate", tests=str(len(results)),
                                failures=str(sum(r.regressed for r in results)))
    for r in results:
        case = ElementTree.SubElement(suite, "testcase", classname=f"{r.task}.{r.metric}",
                                      name=f"{r.candidate} vs {r.reference} [{r.cell}]")
        if r.regressed:
            failure = ElementTree.SubElement(case, "failure", message=f"dropped {r.drop:.3f} > {r.tolerance:.3f}")
            failure.text = json.dumps(asdict(r))
    path.parent.mkdir(parents=True, exist_ok=True)
    ElementTree.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def report(results: list[Comparison], rules: Rules, junit_path: Path | None) -> int:
    """Print the Markdown summary (also to $GITHUB_STEP_SUMMARY), write JUnit XML; the exit code."""
    text = markdown(results, rules.alpha)
    print(text)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as handle:
            handle.write(text)
    if junit_path is not None:
        junit(results, junit_path)
    regressed = [r for r in results if r.regressed]
    if regressed:
        names = ", ".join(f"{r.candidate} {r.task} {r.metric} [{r.cell}] -{r.drop:.3f}" for r in regressed)
        print(f"regression: {names}")
        return 1
    return 0
