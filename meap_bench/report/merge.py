"""`report RUN_DIR RUN_DIR ...`: one report over runs of one configuration (same tasks and task configs,
seed and limit; other checkpoints or other days). The merged run directory holds a merged run.json and the
union of the runs' records, so it reports exactly as if the runs had been one."""

from __future__ import annotations

import json
from pathlib import Path

from meap_bench.errors import UserError
from meap_bench.records import RecordWriter, read_records, sha256_json

SAME = ("tasks", "seed", "limit", "backend")  # what runs must share to be merged


def differing_keys(a: object, b: object, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b)) for k in differing_keys(a.get(key), b.get(key), f"{prefix}.{key}")]
    return [] if a == b else [prefix]


def read_run_json(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no run.json; give run directories written by `run`")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not valid JSON; restore it from the run") from None


def merge_runs(run_dirs: list[Path], out: Path) -> Path:
    """Write `out`/run.json and `out`/records.jsonl from compatible runs; refuse incompatible ones, naming
    the keys that differ, and a checkpoint name that stands for different weights in two runs."""
    runs = [read_run_json(d) for d in run_dirs]
    first = runs[0]
    for run_dir, run in zip(run_dirs[1:], runs[1:], strict=True):
        keys = [k for key in SAME for k in differing_keys(first.get(key), run.get(key), key)]
        if keys:
            raise UserError(f"report: {run_dirs[0]} and {run_dir} differ in {', '.join(keys)}; merge only runs "
                            f"of one config")
    checkpoints: dict[str, dict] = {}
    fingerprints: dict[str, str] = {}
    for run_dir, run in zip(run_dirs, runs, strict=True):
        for checkpoint in run["checkpoints"]:
            name = checkpoint["name"]
            mine = run.get("fingerprints", {}).get(name)
            if name in fingerprints and mine != fingerprints[name]:
                raise UserError(f"report: checkpoint '{name}' has other weights in {run_dir} "
                                f"({mine} vs {fingerprints[name]}); rename one of them to merge the runs")
            checkpoints.setdefault(name, checkpoint)
            fingerprints[name] = mine or ""
    merged = {**{k: first.get(k) for k in SAME}, "run": out.name, "checkpoints": list(checkpoints.values()),
              "fingerprints": fingerprints, "device": first.get("device"), "versions": first.get("versions"),
              "git_commit": first.get("git_commit"), "merged_from": [str(d) for d in run_dirs]}
    reports = {task: spec for run in reversed(runs) for task, spec in (run.get("reports") or {}).items()}
    if reports:  # the first run's spec of each task (runs written before specs were recorded have none)
        merged["reports"] = reports
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(merged, indent=2) + "\n")
    records_path = out / "records.jsonl"
    records_path.unlink(missing_ok=True)
    writer = RecordWriter(records_path)
    seen: set = set()
    try:
        for run_dir in run_dirs:
            fresh = [r for r in read_records(run_dir / "records.jsonl") if r.key not in seen]
            seen.update(r.key for r in fresh)
            writer.write(fresh)
    finally:
        writer.close()
    return out


def merged_name(run_dirs: list[Path]) -> str:
    return f"merged-{sha256_json(sorted(str(d.resolve()) for d in run_dirs))[:8]}"
