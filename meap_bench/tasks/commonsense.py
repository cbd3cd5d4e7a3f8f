"""Zero-shot commonsense through lm-eval, on the run's already loaded backend.

Each lm-eval task runs through `lm_eval.simple_evaluate` with the `meap-bench` model adapter, so the
numbers are lm-eval's own. Per checkpoint and lm-eval task the run directory gets lm-eval's results
JSON and per-sample log (`lm_eval/<checkpoint>/<task>/`), and records.jsonl one record per lm-eval
sample (per-choice loglikelihoods, correct choice, acc, acc_norm), for paired statistics."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveInt

from meap_bench.backends.base import Backend
from meap_bench.config import OneOrMore
from meap_bench.errors import UserError
from meap_bench.records import Record, resume_key, sha256_json
from meap_bench.report_spec import ReportSpec, Strata
from meap_bench.rundir import atomic_write_text, inside
from meap_bench.tasks.base import DirectTask, TaskConfig

if TYPE_CHECKING:
    from lm_eval.api.task import Task as LMTask
    from lm_eval.tasks import TaskManager

PAPER_TASKS = ("arc_challenge", "arc_easy", "boolq", "piqa", "hellaswag", "winogrande", "openbookqa")
LOCAL_TASKS_DIR = "commonsense"  # under tasks/: the project's offline lm-eval tasks
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"


class CommonsenseConfig(TaskConfig):
    tasks: OneOrMore[str] = Field(default_factory=lambda: list(PAPER_TASKS), min_length=1)
    num_fewshot: int = Field(default=0, ge=0)
    limit: PositiveInt | None = None
    include_path: OneOrMore[str] = Field(default_factory=lambda: [LOCAL_TASKS_DIR])
    headline_metric: Literal["acc", "acc_norm"] = "acc_norm"


def include_dirs(paths: list[str]) -> tuple[str, ...]:
    """Task folders as absolute paths; relative ones are taken from the tasks/ folder."""
    from meap_bench.tasks import tasks_dir

    folders = []
    for entry in paths:
        folder = Path(entry).expanduser()
        folder = folder if folder.is_absolute() else tasks_dir() / folder
        if not folder.is_dir():
            raise UserError(f"commonsense.include_path: '{entry}' is not a folder ({folder}); give a folder "
                            f"of lm-eval task YAMLs")
        folders.append(str(folder.resolve()))
    return tuple(folders)


@lru_cache(maxsize=4)
def task_manager(include: tuple[str, ...], defaults: bool) -> TaskManager:
    """lm-eval's task index (indexing lm-eval's own tasks takes seconds, so it is built once)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include) or None, include_defaults=defaults)


def manager_for(names: list[str], include: tuple[str, ...]) -> TaskManager:
    """The local folders alone when they hold every task named, else those plus lm-eval's own tasks."""
    if include:
        local = task_manager(include, False)
        if all(name in local.all_tasks for name in names):
            return local
    manager = task_manager(include, True)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        local_names = sorted(task_manager(include, False).all_tasks) if include else []
        raise UserError(f"commonsense.tasks: unknown lm-eval task '{unknown[0]}'; use an lm-eval task name "
                        f"or a local one ({', '.join(local_names) or 'none in include_path'})")
    return manager


def load_lm_tasks(manager: TaskManager, names: list[str], local: list[str]) -> dict[str, LMTask]:
    """Leaf lm-eval tasks by name (a group expands to its tasks), datasets loaded. A dataset that is not
    available offline is a one-line error naming the task and how to run it."""
    leaves: dict[str, LMTask] = {}
    for name in names:
        try:
            loaded = manager.load([name])
        except (ConnectionError, OSError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"commonsense: lm-eval task '{name}' cannot load its dataset ({first}); run once with network "
                f"access (unset HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) so the dataset is cached, copy the cached "
                f"dataset into HF_DATASETS_CACHE, or add a local task folder with commonsense.include_path "
                f"(offline, the local tasks: --set commonsense.tasks={','.join(local) or 'NAME'})") from None
        leaves.update(loaded["tasks"])
    return leaves


def json_default(value: Any) -> Any:
    from lm_eval.utils import handle_non_serializable

    return handle_non_serializable(value)


def write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")


def choice_scores(sample: dict[str, Any]) -> tuple[list[float], list[bool]] | None:
    """Per-choice (loglikelihood, is_greedy) of a loglikelihood sample, else None."""
    responses = sample.get("filtered_resps") or []
    if not responses or not all(isinstance(r, (list, tuple)) and len(r) == 2 for r in responses):
        return None
    return [float(r[0]) for r in responses], [bool(r[1]) for r in responses]


def sample_record(base: dict[str, Any], lm_task: str, sample: dict[str, Any], num_fewshot: int,
                  seconds: float) -> Record:
    arguments = [list(a) if isinstance(a, (list, tuple)) else a for a in sample.get("arguments", [])]
    context = arguments[0][0] if arguments and isinstance(arguments[0], list) else None
    scores = {m: float(sample[m]) for m in sample.get("metrics", []) if isinstance(sample.get(m), (int, float))}
    meta: dict[str, Any] = {"doc_id": sample["doc_id"], "doc_hash": sample.get("doc_hash")}
    scored = choice_scores(sample)
    if scored is not None:
        meta.update(loglikelihoods=scored[0], is_greedy=scored[1], gold=sample.get("target"),
                    choices=[a[1] for a in arguments if isinstance(a, list) and len(a) > 1])
    request = sha256_json([lm_task, sample["doc_id"], arguments, num_fewshot])
    return Record(
        **base, cell={"lm_eval_task": lm_task}, sample_id=f"{lm_task}/{sample['doc_id']}",
        item_id=f"{lm_task}/{sample['doc_id']}", status="ok",
        request_sha256=request,
        prompt_sha256=hashlib.sha256(context.encode()).hexdigest() if isinstance(context, str) else None,
        target=str(sample.get("target")), scores=scores, meta=meta, seconds=round(seconds, 5),
    )


class CommonsenseTask(DirectTask):
    name = "commonsense"
    config_model = CommonsenseConfig
    config: CommonsenseConfig
    # the paper's average: acc_norm where an lm-eval task has it, else acc; tasks unweighted; a table per task
    report = ReportSpec(strata=Strata(key="lm_eval_task", metrics=("acc", "acc_norm"), fallback="acc",
                                      source="lm-eval"))

    @property
    def sample_limit(self) -> int | None:
        """The config's limit, lowered by `run --limit`."""
        limits = [x for x in (self.config.limit, self.limit) if x is not None]
        return min(limits) if limits else None

    def settings(self, fingerprint: str) -> dict[str, Any]:
        return {"fingerprint": fingerprint, "num_fewshot": self.config.num_fewshot, "limit": self.sample_limit}

    def finished(self, folder: Path, base: dict[str, Any], done: set) -> bool:
        """An lm-eval task is done when its results JSON (written last) matches these settings and every
        one of its samples is recorded."""
        path = folder / RESULTS_FILE
        if not path.is_file():
            return False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):  # damaged: evaluate again (records are kept)
            return False
        marker = data.get("meap_bench", {}) if isinstance(data, dict) else {}
        if marker.get("settings") != self.settings(base["fingerprint"]):
            return False
        keys = {resume_key(base["checkpoint"], base["fingerprint"], base["backend"], self.name, sample_id, sha)
                for sample_id, sha in marker.get("requests", {}).items()}
        return bool(keys) and keys <= done

    def evaluate(self, backend: Backend, base: dict[str, Any], run_dir: Path, done: set,
                 write: Callable[[list[Record]], None]) -> None:
        import lm_eval

        from meap_bench.backends.lm_eval_adapter import MeapBenchLM

        include = include_dirs(self.config.include_path)
        manager = manager_for(self.config.tasks, include)
        root = run_dir / "lm_eval" / base["checkpoint"]
        todo = [n for n in self.config.tasks if not self.finished(root / n, base, done)]
        if not todo:
            return
        local = sorted(task_manager(include, False).all_tasks) if include else []
        lm_tasks = load_lm_tasks(manager, todo, local)  # every dataset loads (or fails) before any model work
        model = MeapBenchLM(backend)
        for lm_task, task_object in lm_tasks.items():
            folder = inside(run_dir, root / lm_task)
            if self.finished(folder, base, done):
                continue
            began = time.perf_counter()
            results = lm_eval.simple_evaluate(
                model=model, tasks=[task_object], task_manager=manager, num_fewshot=self.config.num_fewshot,
                limit=self.sample_limit, log_samples=True, random_seed=self.seed,
            )
            elapsed = time.perf_counter() - began
            samples = (results or {}).pop("samples", {}).get(lm_task, [])
            if not samples:
                raise UserError(f"commonsense: lm-eval task '{lm_task}' produced no samples; check its split "
                                f"and commonsense.limit")
            per_sample = elapsed / len(samples)
            records = [sample_record(base, lm_task, s, self.config.num_fewshot, per_sample) for s in samples]
            write([r for r in records if r.key not in done])
            done.update(r.key for r in records)
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / SAMPLES_FILE, "w", encoding="utf-8") as handle:
                for sample in samples:
                    handle.write(json.dumps(sample, default=json_default) + "\n")
            results["meap_bench"] = {"settings": self.settings(base["fingerprint"]), "seconds": round(elapsed, 3),
                                     "requests": {r.sample_id: r.request_sha256 for r in records}}
            write_json_atomic(folder / RESULTS_FILE, results)

