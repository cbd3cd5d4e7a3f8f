"""`run`: for each checkpoint, one backend serves every task; samples already recorded are skipped."""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from meap_bench.backends import REGISTRY, Backend, GenRequest, LLRequest, backend_spec, load_backend
from meap_bench.config import Checkpoint, validate
from meap_bench.errors import UserError
from meap_bench.faults import fault_point
from meap_bench.provenance import source_commit
from meap_bench.records import Record, RecordWriter, read_records, replace_records, resume_key, sha256_json
from meap_bench.rundir import atomic_write_text, read_run_json, run_checkpoints
from meap_bench.scoring.scorers import Score
from meap_bench.tasks import TASKS, ModelContext, Sample, Task, TaskConfig
from meap_bench.tasks.base import DirectTask

CHUNK = 16  # samples per written batch: a kill loses at most this much work
PACKAGES = ("meap-bench", "torch", "transformers", "tokenizers", "lm_eval", "pandas")


@dataclass
class RunPlan:
    run_dir: Path
    checkpoints: list[Checkpoint]
    tasks: dict[str, TaskConfig]
    seed: int
    limit: int | None
    backend: str
    device: str
    fresh: frozenset[str] = field(default_factory=frozenset)  # checkpoints whose changed weights may start afresh
    log_prompts: bool = False  # keep each prompt's text in its record's meta (as lm-eval's --log_samples)

    def identity(self) -> dict[str, Any]:
        """What defines the run's results; a run directory holds one identity only. The backend and its
        declared capabilities are part of it (a vllm run's logprobs are normalised differently)."""
        return {
            "backend": self.backend, "capabilities": sorted(backend_spec(self.backend).capabilities),
            "tasks": {name: cfg.model_dump(mode="json") for name, cfg in self.tasks.items()},
            "checkpoints": [c.model_dump(mode="json") for c in self.checkpoints],
            "seed": self.seed, "limit": self.limit,
        }

    def default_name(self) -> str:
        return f"{'-'.join(self.tasks)}-{self.backend}-{sha256_json(self.identity())[:8]}"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def plan_from_run_json(run_dir: Path, device: str | None, fresh: frozenset[str] = frozenset()) -> RunPlan:
    """`run --resume RUN_DIR`: the plan recorded when the run started."""
    if not (run_dir / "run.json").is_file():
        raise UserError(f"--resume {run_dir}: no run.json there; give a run directory made by `run`")
    data = read_run_json(run_dir)
    source = str(run_dir / "run.json")
    for name in data["tasks"]:
        if name not in TASKS:
            raise UserError(f"{source}: unknown task '{name}'; the file was edited or damaged: restore it")
    tasks = {name: validate(TASKS[name].config_model, cfg, source, name) for name, cfg in data["tasks"].items()}
    checkpoints = run_checkpoints(data, run_dir)
    return RunPlan(run_dir, checkpoints, tasks, data["seed"], data["limit"], data["backend"],
                   device or data["device"], fresh)


def previous_fingerprints(plan: RunPlan) -> dict[str, str]:
    """The weight fingerprints the run directory recorded, after checking that it holds this run's
    config and backend (one run directory, one config, one backend)."""
    path = plan.run_dir / "run.json"
    if not path.is_file():
        return {}
    old = read_run_json(plan.run_dir)
    if old.get("backend", plan.backend) != plan.backend:
        raise UserError(f"{plan.run_dir} holds records of backend '{old['backend']}', not '{plan.backend}'; "
                        f"pass another --run-name to run this backend")
    identity = plan.identity()
    old.setdefault("capabilities", identity["capabilities"])  # run.json written before capabilities were recorded
    if {k: old.get(k) for k in identity} != identity:
        raise UserError(f"{plan.run_dir} holds a run with another config; pass another --run-name, "
                        f"or --resume {plan.run_dir} to continue it as it was")
    return old.get("fingerprints", {})


def changed_weights(plan: RunPlan, fingerprints: dict[str, str]) -> dict[str, str]:
    """{checkpoint: old fingerprint} of the checkpoints whose weights changed since the run directory
    recorded them. A change is refused unless `--fresh` names the checkpoint, so that results of other
    weights are never resumed into, or reported beside, the new ones."""
    unknown = sorted(plan.fresh - set(fingerprints))
    if unknown:
        raise UserError(f"--fresh: no checkpoint '{unknown[0]}' in this run; its checkpoints: "
                        f"{', '.join(fingerprints)}")
    old = previous_fingerprints(plan)
    changed = {name: old[name] for name, fp in fingerprints.items() if name in old and old[name] != fp}
    for name, before in changed.items():
        if name not in plan.fresh:
            raise UserError(f"{plan.run_dir}: the weights of checkpoint '{name}' changed since this run directory "
                            f"recorded them (fingerprint {before} -> {fingerprints[name]}); pass --run-name NEW to "
                            f"evaluate them in a new run directory, or --fresh {name} to move its old records to "
                            f"{plan.run_dir / 'stale'} and evaluate it again here")
    return changed


def set_aside(plan: RunPlan, name: str, old: str, new: str) -> None:
    """Move checkpoint `name`'s records of other weights to stale/<name>-<old>.jsonl. The stale file is
    written before records.jsonl is replaced (each in one atomic step), so a crash loses no record."""
    path = plan.run_dir / "records.jsonl"
    records = read_records(path)
    current = [r for r in records if r.checkpoint != name or (r.fingerprint == new and r.backend == plan.backend)]
    moved = [r for r in records if r.checkpoint == name and (r.fingerprint != new or r.backend != plan.backend)]
    if not moved:
        return
    stale = plan.run_dir / "stale" / f"{name}-{old}.jsonl"
    earlier = read_records(stale)
    known = {r.key for r in earlier}
    replace_records(stale, earlier + [r for r in moved if r.key not in known])
    replace_records(path, current)
    print(f"note: {name}: {len(moved)} records of its old weights ({old}) moved to {stale}; evaluating it afresh",
          file=sys.stderr)


def write_run_json(plan: RunPlan, fingerprints: dict[str, str]) -> None:
    """run.json: the run's identity, fingerprints and versions, and each task's report spec (what figures and
    tables `report` makes of its records: declared by the task, read by report/ without task code)."""
    path = plan.run_dir / "run.json"
    identity = plan.identity()
    reports = {name: TASKS[name].report_spec(config).to_json() for name, config in identity["tasks"].items()}
    data = {"run": plan.run_dir.name, **identity, "device": plan.device, "reports": reports,
            "fingerprints": fingerprints, "versions": versions(), **source_commit(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def execute(plan: RunPlan) -> None:
    # backends read tokenizer, config and fingerprint now and weights on first use: every checkpoint's
    # weights are checked against the run directory before any work
    backends = {c.name: load_backend(c, plan.backend, plan.device) for c in plan.checkpoints}
    fingerprints = {name: backend.fingerprint for name, backend in backends.items()}
    for backend in backends.values():
        check_capabilities(plan, backend)
    for name, old in changed_weights(plan, fingerprints).items():
        set_aside(plan, name, old, fingerprints[name])
    write_run_json(plan, fingerprints)
    records_path = plan.run_dir / "records.jsonl"
    done = {r.key for r in read_records(records_path)}
    writer = RecordWriter(records_path)
    try:
        for checkpoint in plan.checkpoints:
            fault_point("checkpoint")
            backend = backends.pop(checkpoint.name)  # dropped after its tasks, so one model is in memory at a time
            for name, config in plan.tasks.items():
                task = TASKS[name](config, seed=plan.seed, limit=plan.limit)
                if isinstance(task, DirectTask):  # drives the backend itself (lm-eval); resumes per its own unit
                    task.evaluate(backend, record_base(plan, checkpoint, backend, task), plan.run_dir, done,
                                  writer.write)
                else:
                    run_task(plan, checkpoint, backend, task, done, writer)
    finally:
        writer.close()


def check_capabilities(plan: RunPlan, backend: Backend) -> None:
    """Before any work: every task's required backend capabilities are there."""
    for name in plan.tasks:
        missing = sorted(TASKS[name].requires - backend.capabilities)
        if missing:
            able = [spec.name for spec in REGISTRY.values() if TASKS[name].requires <= spec.capabilities]
            raise UserError(f"task '{name}' needs the backend capability '{', '.join(missing)}', which --backend "
                            f"{plan.backend} lacks; run it with a backend that has it ({', '.join(able)})")


def run_task(plan: RunPlan, checkpoint: Checkpoint, backend: Backend, task: Task, done: set,
             writer: RecordWriter) -> None:
    model = ModelContext(backend.tokenizer, backend.max_length, checkpoint.chat_template)
    samples = list(task.samples(model))
    base = record_base(plan, checkpoint, backend, task)
    check_consistent(plan, checkpoint, backend, task, samples, done)
    todo = [s for s in samples if resume_key(checkpoint.name, backend.fingerprint, plan.backend, task.name,
                                             s.sample_id, s.request_sha256) not in done]
    with tqdm(total=len(samples), initial=len(samples) - len(todo), desc=f"{checkpoint.name} / {task.name}",
              unit="sample", dynamic_ncols=True) as bar:  # closed (drawn) before any interrupt message
        pending = evaluate_todo(plan, backend, task, base, todo, writer, bar)
    if pending:
        print(f"warning: {checkpoint.name} / {task.name}: {len(pending)} samples not recorded because their scorer "
              f"could not finish ({pending[0].explanation}); run the same command again to finish them",
              file=sys.stderr)


def evaluate_todo(plan: RunPlan, backend: Backend, task: Task, base: dict[str, Any], todo: list[Sample],
                  writer: RecordWriter, bar: tqdm) -> list[Score]:
    """Record the skipped samples, then run the others chunk by chunk (each chunk written and fsynced before
    the next); the scores whose scorer could not finish (left for the next run)."""
    skipped = [s for s in todo if s.prompt_ids is None]
    writer.write([record_of(base, s, None, Score({}), 0.0) for s in skipped])
    bar.update(len(skipped))
    runnable = [s for s in todo if s.prompt_ids is not None]
    pending: list[Score] = []
    for start in range(0, len(runnable), CHUNK):
        chunk = runnable[start:start + CHUNK]
        began = time.perf_counter()
        records, unfinished = evaluate_chunk(base, backend, task, chunk)
        seconds = (time.perf_counter() - began) / len(chunk)
        prompts = {s.sample_id: s.prompt_text for s in chunk} if plan.log_prompts else {}
        for record in records:
            record.seconds = round(seconds, 4)
            if plan.log_prompts:
                record.meta = {**record.meta, "prompt": prompts[record.sample_id]}
        writer.write(records)
        fault_point("chunk")
        pending += unfinished
        bar.update(len(chunk))
    return pending


def check_consistent(plan: RunPlan, checkpoint: Checkpoint, backend: Backend, task: Task, samples: list[Sample],
                     done: set) -> None:
    """Refuse to add records to a run whose records this config would not have made (run.json edited, or
    a prompt-building change): every recorded sample of these weights must be one of `samples`, with the
    same request. Mixing them would give samples two records, counted twice by the report."""
    unit = (checkpoint.name, backend.fingerprint, plan.backend, task.name)
    recorded = {key[4]: key[5] for key in done if key[:4] == unit}
    if not recorded:
        return
    planned = {s.sample_id: s.request_sha256 for s in samples}
    changed = sorted(sid for sid, sha in recorded.items() if planned.get(sid, sha) != sha)
    unknown = sorted(sid for sid in recorded if sid not in planned)
    if changed or unknown:
        what = (f"{len(changed)} recorded samples (e.g. '{changed[0]}') were made from other requests" if changed
                else f"{len(unknown)} recorded samples (e.g. '{unknown[0]}') are not in its config")
        raise UserError(f"{plan.run_dir / 'run.json'} does not match its records for {checkpoint.name}/{task.name}: "
                        f"{what}; restore run.json (was it edited?) or start a new run directory with --run-name")


def record_base(plan: RunPlan, checkpoint: Checkpoint, backend: Backend, task: Task) -> dict[str, Any]:
    """The fields every record of this checkpoint and task carries."""
    return {"run": plan.run_dir.name, "checkpoint": checkpoint.name, "fingerprint": backend.fingerprint,
            "backend": plan.backend, "capabilities": sorted(backend.capabilities),
            "objective": checkpoint.objective or "", "pair": checkpoint.pair, "task": task.name}


def evaluate_chunk(base: dict, backend: Backend, task: Task, chunk: list[Sample]) -> tuple[list[Record], list[Score]]:
    """Records of the chunk's samples, and the scores that could not finish (not recorded: a rerun retries)."""
    generating = [s for s in chunk if s.max_new_tokens > 0]
    outputs = backend.generate([GenRequest(s.prompt_ids, s.max_new_tokens, s.stop) for s in generating])
    texts = {s.sample_id: o.text for s, o in zip(generating, outputs, strict=True)}
    ll_requests = [LLRequest(s.prompt_ids, choice) for s in chunk for choice in s.choices]
    ll_outputs = iter(backend.loglikelihood(ll_requests) if ll_requests else [])
    attending = [s.attention for s in chunk if s.attention is not None]
    summaries = iter(backend.attention(attending) if attending else [])
    choices = {s.sample_id: [next(ll_outputs) for _ in s.choices] for s in chunk}
    plain = [s for s in chunk if s.attention is None]
    scored = dict(zip([s.sample_id for s in plain],
                      task.score_batch(plain, [texts.get(s.sample_id) for s in plain],
                                       [choices[s.sample_id] for s in plain]), strict=True))
    records, unfinished = [], []
    for sample in chunk:
        output = texts.get(sample.sample_id)
        if sample.attention is not None:
            score = Score(task.score_attention(sample, next(summaries)))
        else:
            score = scored[sample.sample_id]
        if score.final:
            records.append(record_of(base, sample, output, score, 0.0))
        else:
            unfinished.append(score)
    return records, unfinished


def record_of(base: dict, sample: Sample, output: str | None, score: Score, seconds: float) -> Record:
    """The record of a sample; a scorer's explanation and metadata join the sample's meta."""
    meta = {**sample.meta, **score.metadata}
    if score.explanation is not None:
        meta["explanation"] = score.explanation
    return Record(
        **base, cell=sample.cell, sample_id=sample.sample_id, item_id=sample.item_id,
        status="skipped" if sample.prompt_ids is None else "ok", request_sha256=sample.request_sha256,
        prompt_sha256=sample.prompt_sha256,
        prompt_tokens=len(sample.prompt_ids) if sample.prompt_ids is not None else None,
        target_offset=sample.target_offset, target=sample.target, output=output, scores=score.values,
        skip_reason=sample.skip_reason, meta=meta, seconds=seconds,
    )
