"""Which figures and tables each task of a run gets: its `ReportSpec` as run.json recorded it when the run started,
or, for a run directory written before run.json held specs, the one the task registry declares for the recorded
config (the registry imports task code, never a model)."""

from __future__ import annotations

from pathlib import Path

from meap_bench.errors import UserError
from meap_bench.report_spec import ReportSpec


def report_specs(run: dict, run_dir: Path) -> dict[str, ReportSpec]:
    """{task: spec} for every task of run.json; a task the registry does not know gets the common tables only."""
    recorded = run.get("reports") or {}
    specs = {}
    for task, config in run["tasks"].items():
        if task in recorded:
            try:
                specs[task] = ReportSpec.from_json(recorded[task])
            except ValueError as err:
                raise UserError(f"{run_dir / 'run.json'}: reports.{task}: {err}; restore run.json, or delete its "
                                f"reports entry to use the task's current report") from None
        else:
            specs[task] = registered_spec(task, config)
    return specs


def registered_spec(task: str, config: dict) -> ReportSpec:
    from meap_bench.tasks import TASKS  # here: task code loads only for runs recorded without specs

    return TASKS[task].report_spec(config) if task in TASKS else ReportSpec()
