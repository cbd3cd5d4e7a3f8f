"""Task registry: a task is a config schema (`tasks/<name>.yaml`), a sample builder and a scorer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meap_bench.config import apply_override, read_yaml, validate
from meap_bench.errors import UserError
from meap_bench.tasks.attention import AttentionTask
from meap_bench.tasks.base import ModelContext, Sample, Task, TaskConfig
from meap_bench.tasks.commonsense import CommonsenseTask
from meap_bench.tasks.hallucination import HallucinationTask
from meap_bench.tasks.kv import KvTask
from meap_bench.tasks.mdqa import MdqaTask
from meap_bench.tasks.needle import NeedleTask

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (NeedleTask, MdqaTask, KvTask, CommonsenseTask, AttentionTask, HallucinationTask)
}


def tasks_dir() -> Path:
    """`./tasks` when run from a checkout, else the folder shipped beside the package."""
    local = Path.cwd() / "tasks"
    return local if local.is_dir() else Path(__file__).resolve().parents[2] / "tasks"


def parse_task_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("--tasks: give at least one task, e.g. --tasks needle")
    for name in names:
        if name not in TASKS:
            raise UserError(f"--tasks: unknown task '{name}'; choose from: {', '.join(sorted(TASKS))}")
    return names


def load_task_config(name: str, overrides: list[tuple[str, str, Any]], folder: Path | None = None
                     ) -> TaskConfig:
    """tasks/<name>.yaml (absent: defaults) with `--set name.key=value` overrides applied, validated."""
    path = (folder or tasks_dir()) / f"{name}.yaml"
    data = read_yaml(path) if path.is_file() else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of {name} settings")
    for task, key, value in overrides:
        if task == name:
            apply_override(data, key, value)
    source = f"{path}" + (" with --set" if any(t == name for t, _, _ in overrides) else "")
    return validate(TASKS[name].config_model, data, source, name)


__all__ = ["TASKS", "ModelContext", "Sample", "Task", "TaskConfig", "load_task_config", "parse_task_names",
           "tasks_dir"]
